"""The named HTTP endpoints (JSON in, JSON out): each calls the service and sends its view's ``to_json``.

The reviewer and role come from the login, never from request data. Every endpoint is wrapped by
``user_errors``, so a ``UserError`` reaches the client as its message.
"""

from __future__ import annotations

import gradio as gr

from ..core.errors import UserError
from ..feedback.records import Feedback
from ..service.service import HITLService
from ..service.views import AskReply, CompareReply, JudgementReply, VoteReply
from .errors import user_errors
from .login import Login


class ApiHandlers:
    """The named endpoints' callbacks, bound to one service.

    Gradio reads each callback's signature for the endpoint's parameters, and injects the
    request by its annotation.

    Args:
        service: the service every endpoint calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login

    # ----- review -----
    def api_ask(self, prompt: str, request: gr.Request, candidates: int | None = None) -> dict:
        """Ask a question; returns generation_id, the candidate answers (``answer`` is the first)
        and the version that wrote them. ``candidates`` (1-4) defaults to ``--candidates``."""
        return AskReply.of(self.service.ask(prompt, self.login(request), candidates)).to_json()

    def api_accept(
        self, generation_id: str, request: gr.Request, candidate: int = 0, override_reason: str | None = None
    ) -> dict:
        """Accept a candidate (default the first); one with a high-severity safety flag needs ``override_reason``."""
        caller = self.login(request)
        return self._saved(self.service.accept(generation_id, caller, candidate, override_reason))

    def api_edit(
        self, generation_id: str, text: str, request: gr.Request, candidate: int = 0, override_reason: str | None = None
    ) -> dict:
        """Replace a candidate (default the first) with a corrected answer; the edit is safety-checked
        first, and one with a high-severity flag needs ``override_reason``."""
        caller = self.login(request)
        return self._saved(self.service.edit(generation_id, text, caller, candidate, override_reason))

    def api_reject(self, generation_id: str, reason: str, request: gr.Request, candidate: int = 0) -> dict:
        """Reject a candidate (default the first) of a generation, with a reason."""
        return self._saved(self.service.reject(generation_id, reason, self.login(request), candidate))

    def api_rate(
        self,
        generation_id: str,
        action: str,
        rubric: dict,
        request: gr.Request,
        candidate: int = 0,
        text: str | None = None,
        reason: str | None = None,
        override_reason: str | None = None,
    ) -> dict:
        """Accept, edit (``text``) or reject (``reason``) a candidate with rubric ratings {axis: level}
        (--rubric on; the axes are in /rubric). Ratings of likely or severe harm on an accepted answer
        need ``override_reason``."""
        caller = self.login(request)
        if action == "accept":
            fb = self.service.accept(generation_id, caller, candidate, override_reason, rubric)
        elif action == "edit":
            fb = self.service.edit(generation_id, text, caller, candidate, override_reason, rubric)
        elif action == "reject":
            fb = self.service.reject(generation_id, reason, caller, candidate, rubric)
        else:
            raise UserError(f"a rated judgement accepts, edits or rejects; {action!r} is none of these")
        return self._saved(fb)

    def api_rubric(self, request: gr.Request) -> dict:
        """The rubric's axes and levels (best first), and whether ratings are on (--rubric on)."""
        self.login(request)
        rubric = self.service.rubric
        return {"on": rubric is not None, "axes": [a.model_dump() for a in rubric.axes] if rubric else []}

    def api_rank(self, generation_id: str, order: list | str, request: gr.Request) -> dict:
        """Rank a generation's candidates best first: ``[2, [0, 1]]`` or ``"2 > 0 = 1"`` (0 and 1
        tie); ``[]`` or ``"none"``: all unacceptable."""
        return self._saved(self.service.rank(generation_id, order, self.login(request)))

    def _saved(self, fb: Feedback) -> dict:
        return JudgementReply.of(fb, self.service.since_last_version()).to_json()

    # ----- the review queue -----
    def api_next(self, request: gr.Request) -> dict:
        """Take the next queued item: item_id, generation_id, prompt, candidates and version
        (item_id null when nothing is left for you), with your progress. Judge it with /accept,
        /edit, /reject or /rank on the generation_id."""
        return self.service.next_item(self.login(request)).to_json()

    def api_skip(self, item_id: str, request: gr.Request) -> dict:
        """Pass on an item you took; returns your progress."""
        return self.service.skip(item_id, self.login(request)).to_json()

    def api_agreement(self, request: gr.Request) -> dict:
        """Krippendorff's alpha (team and per batch), pairwise Cohen's kappa, each reviewer's
        agreement with the consensus, and the number of items behind each figure."""
        return self.service.agreement(self.login(request)).model_dump(mode="json")

    def api_adjudications(self, request: gr.Request) -> list:
        """Items whose reviewers disagree, with their judgements side by side (admin)."""
        return [a.to_json() for a in self.service.adjudications(self.login(request))]

    def api_adjudicate(
        self,
        item_id: str,
        action: str,
        request: gr.Request,
        candidate: int = 0,
        order: list | str | None = None,
        reason: str | None = None,
    ) -> dict:
        """Settle a disputed item (admin): action accept or reject (a reason) a candidate, or rank (``order``)."""
        return self.service.adjudicate(item_id, self.login(request), action, candidate, order, reason).to_json()

    def api_audit(
        self,
        request: gr.Request,
        who: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: int = 1,
    ) -> dict:
        """One page of the audit log, newest first (admin): filter by who, kind and ISO dates."""
        return self.service.audit(self.login(request), who, kind, since, until, page).to_json()

    # ----- the loop -----
    def api_status(self, request: gr.Request) -> dict:
        """Serving version, feedback counts, trainer state and versions."""
        self.login(request)
        return self.service.status().to_json()

    def api_retrain(self, request: gr.Request) -> dict:
        """Start a retrain now (admin)."""
        return self.service.retrain(self.login(request)).to_json()

    def api_activate(self, version: str, request: gr.Request, force: bool = False) -> dict:
        """Serve a version (vNNNN or base) from now on (admin); a version the gate held back needs ``force``."""
        return self.service.activate(version, self.login(request), force=force).to_json()

    def api_versions(self, request: gr.Request) -> list:
        """Every version with its manifest figures."""
        self.login(request)
        return [row.to_json() for row in self.service.versions()]

    # ----- blind A/B comparison -----
    def api_compare(self, prompt: str, request: gr.Request) -> dict:
        """Both versions under comparison answer; returns generation_id, left, right (versions hidden)."""
        return CompareReply.of(self.service.compare(prompt, self.login(request))).to_json()

    def api_vote(self, generation_id: str, vote: str, request: gr.Request) -> dict:
        """Vote on a comparison: left, right, tie or both_bad. Returns the saved vote and the versions."""
        fb = self.service.vote(generation_id, vote, self.login(request))
        return VoteReply.of(fb, vote, self.service.generation(fb.generation_id)).to_json()

    def api_comparison(self, a: str, b: str, request: gr.Request) -> dict:
        """Choose the two versions to compare (admin)."""
        return self.service.set_comparison(a, b, self.login(request)).model_dump(mode="json")

    def api_results(self, request: gr.Request) -> dict:
        """Win/tie/loss, win rate with a bootstrap 95% CI, tests, Bradley-Terry ratings."""
        self.login(request)
        return self.service.comparison_results().to_json()

    # ----- taught styles -----
    def api_styles(self, request: gr.Request) -> dict:
        """The style checks and each version's adoption of them."""
        self.login(request)
        return self.service.styles().to_json()

    def api_style_check(self, name: str, pattern: str, request: gr.Request, regex: bool = False) -> dict:
        """Add or replace a style check (admin); returns every check."""
        checks = self.service.set_style_check(name, pattern, self.login(request), regex=regex)
        return {"checks": [c.model_dump() for c in checks]}

    def api_remove_style_check(self, name: str, request: gr.Request) -> dict:
        """Remove a style check (admin); returns the remaining checks."""
        checks = self.service.remove_style_check(name, self.login(request))
        return {"checks": [c.model_dump() for c in checks]}


def register_api(h: ApiHandlers, model_queue: dict) -> None:
    """Register the named endpoints inside the open Blocks.

    Call before binding the UI's own events, so that the endpoints, not the events, own the names.

    Args:
        h: the endpoints' callbacks.
        model_queue: the queue settings (concurrency id and limit) shared by everything that generates.
    """
    endpoints = (  # name, callback, whether it generates (and so shares the model's queue)
        ("ask", h.api_ask, True),
        ("accept", h.api_accept, False),
        ("edit", h.api_edit, False),
        ("reject", h.api_reject, False),
        ("rank", h.api_rank, False),
        ("rate", h.api_rate, False),
        ("rubric", h.api_rubric, False),
        ("next", h.api_next, True),
        ("skip", h.api_skip, False),
        ("agreement", h.api_agreement, False),
        ("adjudications", h.api_adjudications, False),
        ("adjudicate", h.api_adjudicate, False),
        ("audit", h.api_audit, False),
        ("status", h.api_status, False),
        ("retrain", h.api_retrain, False),
        ("activate", h.api_activate, False),
        ("versions", h.api_versions, False),
        ("compare", h.api_compare, True),
        ("vote", h.api_vote, False),
        ("comparison", h.api_comparison, False),
        ("compare_results", h.api_results, False),
        ("styles", h.api_styles, False),
        ("style_check", h.api_style_check, False),
        ("remove_style_check", h.api_remove_style_check, False),
    )
    for name, callback, generates in endpoints:
        gr.api(user_errors(callback), api_name=name, **(model_queue if generates else {}))
