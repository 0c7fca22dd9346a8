"""build_demo(service) -> gr.Blocks: the clinicians' Review tab, the Versions tab, the status
panel, and the named API endpoints. Handlers are thin: they turn the login into a ``Caller``,
call the service, and turn ``UserError`` into ``gr.Error``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from typing import Callable

import gradio as gr

from ..core.config import MAX_CANDIDATES
from ..core.errors import UserError
from ..feedback.ranking import format_order, ranks_to_order
from .dashboard import build_dashboard
from ..safety.checker import flags_json, flags_markdown
from ..service.service import LOCAL_USER, Caller, HITLService
from .compare_tab import CompareHandlers, build_compare_tab

log = logging.getLogger(__name__)

MODEL_QUEUE = "model"  # every event that generates shares one queue slot: the model is one resource
STATUS_REFRESH_S = 2.0
# service.versions() key -> column header of the Versions tab
# Status and the gate's verdict come first: they are what an admin reads before anything else.
VERSION_COLUMNS = {
    "version": "version",
    "status": "status",
    "gate": "gate",
    "parent": "parent",
    "created_at": "created",
    "new_judgements": "new judgements",
    "sft_rows": "SFT rows",
    "dpo_rows": "DPO pairs",
    "kto_rows": "KTO labels",
    "dropped_pairs": "identical pairs dropped",
    "loss_before": "SFT loss before",
    "loss_after": "SFT loss after",
    "preference_method": "preference",
    "preference_loss": "pref. loss",
    "reward_accuracy": "reward accuracy",
    "reward_margin": "reward margin",
    "kl": "KL to base (train)",
    "heldout_pairs": "held-out pairs",
    "heldout_accuracy": "held-out accuracy",
    "edit_logprob": "held-out edit log-prob",
    "perplexity": "probe perplexity",
    "kl_base": "KL(new‖base)/token",
    "kl_serving": "KL(new‖serving)/token",
    "answer_tokens": "answer tokens",
    "safe_rate": "red-team safe rate",
    "over_refusal_rate": "benign refused",
    "medication_flag_rate": "medication flags",
    "eval_s": "eval seconds",
    "duration_s": "seconds",
}


def _user_errors(fn: Callable) -> Callable:
    """Show a ``UserError`` to the user as ``gr.Error``; anything else is logged as a defect.

    A user error is the user's to fix, not a defect: it is logged as one line with the login and
    the message, without Gradio's traceback.
    """

    def refused(exc: UserError, args: tuple, kwargs: dict) -> gr.Error:
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        log.info("%s refused for %s: %s", fn.__name__, getattr(request, "username", None) or "anonymous", exc)
        return gr.Error(str(exc), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as exc:
                raise refused(exc, args, kwargs) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise refused(exc, args, kwargs) from exc

    return wrapper


def progress_html(fraction: float) -> str:
    """The status panel's training progress: a native progress bar with its percentage."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return (
        f'<label>Training progress <progress max="100" value="{percent}" style="width:100%">{percent}%</progress> '
        f"{percent}%</label>"
    )


def decoding_line(fast: dict | None) -> str:
    """The status panel's line on how answers are decoded, from ``/status``'s ``fast_path``."""
    if fast is None:
        return "**Decoding:** the float32 PEFT model"
    text = f"**Decoding:** {fast['dtype']} merged copy"
    compiled = fast["compiled"]
    if compiled is None:
        return text + ", uncompiled"
    if compiled["error"]:
        return text + f", uncompiled (compiling failed: {compiled['error']})"
    ready = ", ".join(f"{bucket} tokens x {rows}" for bucket, rows in compiled["ready"])
    text += f", compiled for {ready} (cache x answers)" if ready else ", uncompiled until compiling is done"
    return text + (" (compiling {} x {})".format(*compiled["compiling"]) if compiled["compiling"] else "")


class _Handlers:
    """UI and API callbacks bound to one service."""

    def __init__(self, service: HITLService, roles: dict[str, str]) -> None:
        self.service = service
        self.roles = roles

    def caller(self, request: gr.Request | None) -> Caller:
        username = getattr(request, "username", None) if request is not None else None
        if username is None:
            if self.roles:
                raise UserError("not logged in")
            # No logins configured: the app listens on loopback for one local user (--share is
            # refused without logins), who administers it.
            return Caller(LOCAL_USER, "admin")
        return Caller(username, self.roles.get(username, "clinician"))

    # ----- Review tab -----
    def ask_stream(self, prompt: str, how_many: int | str, request: gr.Request):
        caller = self.caller(request)
        k = self.service.candidates_for(int(how_many))
        ranked = k > 1
        yield (
            *[gr.update(value="", label=_candidate_label(i, "…"), visible=i < k) for i in range(MAX_CANDIDATES)],
            *[gr.update(value=None, visible=ranked and i < k) for i in range(MAX_CANDIDATES)],
            _badge("…"),
            None,
            gr.update(choices=[str(i + 1) for i in range(k)], value="1", visible=ranked),
            "",
            gr.update(value=False, visible=ranked),
            gr.update(visible=ranked),  # "Save ranking": a single answer has nothing to rank
            "",
        )
        keep = [gr.skip()] * (MAX_CANDIDATES + 6)
        for texts, version, generation in self.service.ask_stream(prompt, caller, k):
            boxes = [gr.update(value=t, label=_candidate_label(i, version)) for i, t in enumerate(texts)]
            boxes += [gr.skip()] * (MAX_CANDIDATES - len(texts))
            if generation is None:
                yield *boxes, *keep[:MAX_CANDIDATES], _badge(version), *keep[:6]
            else:
                state = {"id": generation.id, "version": generation.version, "candidates": generation.candidates}
                yield (
                    *boxes, *keep[:MAX_CANDIDATES], _badge(version), state, gr.skip(), generation.candidates[0],
                    gr.skip(), gr.skip(), flags_markdown(generation),
                )

    def choose(self, state: dict | None, choice: str | None) -> str:
        """The edit box starts from the candidate being judged."""
        if not state or not choice:
            return gr.skip()
        return state["candidates"][int(choice) - 1]

    def accept(self, state: dict | None, choice: str | None, override: str, request: gr.Request) -> str:
        fb = self.service.accept(_current(state), self.caller(request), _candidate(choice), override_reason=override)
        return self._saved(fb)

    def edit(self, state: dict | None, choice: str | None, text: str, override: str, request: gr.Request) -> str:
        fb = self.service.edit(_current(state), text, self.caller(request), _candidate(choice), override_reason=override)
        return self._saved(fb)

    def reject(self, state: dict | None, choice: str | None, reason: str, request: gr.Request) -> str:
        fb = self.service.reject(_current(state), reason, self.caller(request), _candidate(choice))
        return self._saved(fb)

    def rank(self, state: dict | None, all_unacceptable: bool, r1, r2, r3, r4, request: gr.Request):
        # One rank dropdown per candidate slot (MAX_CANDIDATES of them), named so Gradio can inject the request.
        ranks = (r1, r2, r3, r4)[:MAX_CANDIDATES]
        generation_id = _current(state)
        k = len(state["candidates"])
        if all_unacceptable:
            order: list = []
        else:
            given = list(ranks[:k])
            if any(r in (None, "") for r in given):
                raise UserError("give every candidate a rank (1 = best; equal ranks tie), or tick 'All unacceptable'")
            order = ranks_to_order([int(r) for r in given])
        fb = self.service.rank(generation_id, order, self.caller(request))
        if fb.all_unacceptable:
            return self._saved(fb), gr.skip(), gr.skip()
        best = fb.ranking[0][0]
        # The clinician can still correct the best candidate: select it and put it in the edit box.
        return self._saved(fb), str(best + 1), state["candidates"][best]

    def _saved(self, fb) -> str:
        gr.Info(f"Saved: {fb.action}")
        status = self.service.status()
        what = fb.action if fb.ranking is None else f"ranking {format_order(fb.ranking)}"
        return f"Saved {what} ({fb.id[:8]}) by {fb.reviewer}. {status['until_next_retrain']} judgement(s) until the next retrain."

    # ----- status panel -----
    def status_panel(self) -> tuple[str, float]:
        s = self.service.status()
        t = s["trainer"]
        lines = [
            f"**Serving:** `{s['serving_version']}`",
            f"**Feedback:** {s['feedback_total']} judgements ({s['since_last_version']} since the last version)",
            f"**Next retrain:** in {s['until_next_retrain']} judgement(s)" + ("" if s["auto_retrain"] else " (auto-retrain off)"),
            f"**Trainer:** {t['state']}" + (f" — {t['message']}" if t["message"] else ""),
        ]
        if t["state"] == "failed" and t["last_error"]:
            lines.append(f"**Last error:** {t['last_error']}")
        if s["corrupt_lines"]:
            lines.append(f"**Store:** {s['corrupt_lines']} corrupt line(s) skipped (see the log)")
        lines.append(decoding_line(s["fast_path"]))
        return "\n\n".join(lines), progress_html(t["progress"] if t["state"] == "training" else 0.0)

    def retrain(self, request: gr.Request, progress=gr.Progress()) -> str:
        self.service.retrain(self.caller(request))
        while True:
            t = self.service.trainer.status()
            progress(t.progress, desc=t.message or t.state)
            if t.state != "training":
                break
            time.sleep(0.5)
        if t.state == "failed":
            raise gr.Error(f"retrain failed: {t.last_error}")
        return t.message

    # ----- Versions tab -----
    def versions_table(self) -> tuple[list[list], gr.Dropdown]:
        rows = self.service.versions()
        table = [[_fmt(r.get(c)) for c in VERSION_COLUMNS] for r in rows]
        return table, gr.Dropdown(choices=[r["version"] for r in rows], value=self.service.models.version)

    def activate(self, version: str, force: bool, request: gr.Request) -> str:
        result = self.service.activate(version, self.caller(request), force=force)
        forced = " (forced past the promotion gate; recorded)" if result["forced"] else ""
        return f"Now serving {result['serving_version']} (was {result['previous_version']}){forced}."

    # ----- named API endpoints (JSON in, JSON out) -----
    def styles_table(self) -> list[list]:
        """The style checks as table rows."""
        return [[c.name, c.pattern, c.regex] for c in self.service.style_checks.all()]

    def save_style(self, name: str, pattern: str, regex: bool, request: gr.Request) -> tuple[list[list], str]:
        checks = self.service.set_style_check(name, pattern, self.caller(request), regex=regex)
        return self.styles_table(), f"saved style check {name.strip()!r}; {len(checks)} defined"

    def remove_style(self, name: str, request: gr.Request) -> tuple[list[list], str]:
        name = (name or "").strip()
        self.service.remove_style_check(name, self.caller(request))
        return self.styles_table(), f"removed style check {name!r}"

    def api_styles(self, request: gr.Request) -> dict:
        self.caller(request)
        return {
            "checks": [c.model_dump() for c in self.service.style_checks.all()],
            "adoption": self.service.style_adoption(),
        }

    def api_style_check(self, name: str, pattern: str, request: gr.Request, regex: bool = False) -> dict:
        checks = self.service.set_style_check(name, pattern, self.caller(request), regex=regex)
        return {"checks": [c.model_dump() for c in checks]}

    def api_remove_style_check(self, name: str, request: gr.Request) -> dict:
        checks = self.service.remove_style_check(name, self.caller(request))
        return {"checks": [c.model_dump() for c in checks]}

    def api_ask(self, prompt: str, request: gr.Request, candidates: int | None = None) -> dict:
        """Ask a question; returns generation_id, the candidate answers (``answer`` is the first)
        and the version that wrote them. ``candidates`` (1-4) defaults to ``--candidates``."""
        gen = self.service.ask(prompt, self.caller(request), candidates)
        return {
            "generation_id": gen.id,
            "answer": gen.answer,
            "candidates": gen.candidates,
            "version": gen.version,
            "flags": flags_json(gen),
            "refused": gen.refused,
            "redactions": gen.redactions,
        }

    def api_accept(
        self, generation_id: str, request: gr.Request, candidate: int = 0, override_reason: str | None = None
    ) -> dict:
        """Accept a candidate (default the first); one with a high-severity safety flag needs ``override_reason``."""
        caller = self.caller(request)
        return self._feedback_json(self.service.accept(generation_id, caller, candidate, override_reason))

    def api_edit(
        self, generation_id: str, text: str, request: gr.Request, candidate: int = 0, override_reason: str | None = None
    ) -> dict:
        """Replace a candidate (default the first) with a corrected answer; the edit is safety-checked
        first, and one with a high-severity flag needs ``override_reason``."""
        caller = self.caller(request)
        return self._feedback_json(self.service.edit(generation_id, text, caller, candidate, override_reason))

    def api_reject(self, generation_id: str, reason: str, request: gr.Request, candidate: int = 0) -> dict:
        """Reject a candidate (default the first) of a generation, with a reason."""
        return self._feedback_json(self.service.reject(generation_id, reason, self.caller(request), candidate))

    def api_rank(self, generation_id: str, order: list | str, request: gr.Request) -> dict:
        """Rank a generation's candidates best first: ``[2, [0, 1]]`` or ``"2 > 0 = 1"`` (0 and 1
        tie); ``[]`` or ``"none"``: all unacceptable."""
        return self._feedback_json(self.service.rank(generation_id, order, self.caller(request)))

    def api_status(self, request: gr.Request) -> dict:
        """Serving version, feedback counts, trainer state and versions."""
        self.caller(request)
        return self.service.status()

    def api_retrain(self, request: gr.Request) -> dict:
        """Start a retrain now (admin)."""
        return self.service.retrain(self.caller(request))

    def api_activate(self, version: str, request: gr.Request, force: bool = False) -> dict:
        """Serve a version (vNNNN or base) from now on (admin); a version the gate held back needs ``force``."""
        return self.service.activate(version, self.caller(request), force=force)

    def api_versions(self, request: gr.Request) -> list:
        """Every version with its manifest figures."""
        self.caller(request)
        return self.service.versions()

    def _feedback_json(self, fb) -> dict:
        since = self.service.since_last_version()
        return {
            "saved": True,
            "feedback_id": fb.id,
            "generation_id": fb.generation_id,
            "action": fb.action,
            "candidate": fb.candidate,
            "ranking": fb.ranking,
            "reviewer": fb.reviewer,
            "override_reason": fb.override_reason,
            "flags": [f.model_dump() for f in fb.flags],
            "since_last_version": since,
        }


def _candidate(choice: str | None) -> int:
    return int(choice) - 1 if choice else 0


def _candidate_label(i: int, version: str) -> str:
    return f"Candidate {i + 1} · {version}"


def _current(state: dict | None) -> str:
    if not state or not state.get("id"):
        raise UserError("there is no finished answer to judge yet; ask a question first")
    return state["id"]


def _badge(version: str) -> str:
    return f"**Model version:** `{version}`"


def _fmt(value) -> str | float | int | bool:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value


def build_demo(service: HITLService, roles: dict[str, str] | None = None) -> gr.Blocks:
    """The Gradio app over ``service``.

    Args:
        service: the service every handler calls.
        roles: username -> role for logged-in users; empty when the app runs without logins.
    """
    h = _Handlers(service, roles or {})
    ch = CompareHandlers(service, h.caller)
    # Gradio's usage analytics would report each start and the app's layout to a third-party
    # server; a clinical tool sends nothing out that its admins did not ask for.
    with gr.Blocks(title="Clinician feedback loop", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Clinician feedback loop\nAsk a medical question, then rank the candidate answers, "
            "or accept, edit or reject one of them."
        )
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Review"):
                    badge = gr.Markdown(_badge(service.models.version), elem_id="version-badge")
                    question = gr.Textbox(label="Question", lines=3, elem_id="question")
                    with gr.Row():
                        sampled = service.models.sampling.do_sample
                        how_many = gr.Dropdown(
                            label="Candidates",
                            choices=list(range(1, MAX_CANDIDATES + 1)) if sampled else [1],
                            value=service.settings.candidates,
                            interactive=sampled,
                            elem_id="how-many",
                            scale=1,
                        )
                        ask_btn = gr.Button("Ask", variant="primary", elem_id="ask", scale=3)
                    current = gr.State(None)
                    boxes, ranks = [], []
                    # Each candidate across the page, its rank under it: answers are read, not scrolled
                    # in narrow boxes. No row per candidate, so hidden candidates leave no gap.
                    for i in range(MAX_CANDIDATES):
                        shown = i < service.settings.candidates
                        boxes.append(
                            gr.Textbox(
                                label=_candidate_label(i, service.models.version),
                                lines=6,
                                interactive=False,
                                visible=shown,
                                elem_id=f"answer-{i}",
                            )
                        )
                        ranks.append(
                            gr.Dropdown(
                                label=f"Rank of candidate {i + 1} (1 = best)",
                                choices=[str(r + 1) for r in range(MAX_CANDIDATES)],
                                value=None,
                                visible=shown and service.settings.candidates > 1,
                                elem_id=f"rank-{i}",
                            )
                        )
                    with gr.Row():
                        all_bad = gr.Checkbox(
                            label="All unacceptable", visible=service.settings.candidates > 1, elem_id="all-bad"
                        )
                        rank_btn = gr.Button(
                            "Save ranking", visible=service.settings.candidates > 1, elem_id="save-ranking"
                        )
                    chooser = gr.Radio(
                        label="Candidate to accept, edit or reject",
                        choices=[str(i + 1) for i in range(service.settings.candidates)],
                        value="1",
                        visible=service.settings.candidates > 1,
                        elem_id="chooser",
                    )
                    flags_md = gr.Markdown(elem_id="safety-flags")
                    override = gr.Textbox(
                        label="Override reason (needed to accept or save an answer with a high-severity safety flag)",
                        lines=1,
                        elem_id="override-reason",
                    )
                    accept_btn = gr.Button("Accept", variant="primary", elem_id="accept")
                    with gr.Accordion("Edit into a correct answer", open=True):
                        edit_box = gr.Textbox(label="Corrected answer", lines=8, elem_id="edit-text")
                        edit_btn = gr.Button("Save edit", elem_id="save-edit")
                    with gr.Accordion("Reject", open=True):
                        reason = gr.Textbox(label="Reason", lines=2, elem_id="reject-reason")
                        reject_btn = gr.Button("Reject", variant="stop", elem_id="reject")
                    result = gr.Textbox(label="Last action", interactive=False, elem_id="result")
                with gr.Tab("Versions"):
                    versions = gr.Dataframe(
                        headers=list(VERSION_COLUMNS.values()),
                        interactive=False,
                        elem_id="versions-table",
                    )
                    with gr.Row():
                        choice = gr.Dropdown(label="Version", choices=[], elem_id="version-choice")
                        activate_btn = gr.Button("Activate / roll back", elem_id="activate")
                        refresh_btn = gr.Button("Refresh")
                    force = gr.Checkbox(label="Force (serve a version the promotion gate held back)", elem_id="force")
                    activate_result = gr.Textbox(label="Activation", interactive=False, elem_id="activate-result")
                with gr.Tab("Compare"):
                    compare_outputs = build_compare_tab(ch, _user_errors, MODEL_QUEUE)
                with gr.Tab("Dashboard"):
                    build_dashboard(service, demo)
                    with gr.Accordion("Taught styles (admins define them; every version is checked)", open=False):
                        styles_table = gr.Dataframe(
                            headers=["style", "pattern", "regular expression"], interactive=False, elem_id="styles-table"
                        )
                        with gr.Row():
                            style_name = gr.Textbox(label="Style name", elem_id="style-name")
                            style_pattern = gr.Textbox(
                                label="Phrase the answers must contain, or a regular expression", elem_id="style-pattern"
                            )
                            style_regex = gr.Checkbox(label="Regular expression", elem_id="style-regex")
                        with gr.Row():
                            style_save = gr.Button("Save style check", elem_id="style-save")
                            style_remove = gr.Button("Remove style check", elem_id="style-remove")
                        style_result = gr.Textbox(label="Style checks", interactive=False, elem_id="style-result")
            with gr.Column(scale=1):
                gr.Markdown("### Status")
                status_md = gr.Markdown(elem_id="status")
                progress_bar = gr.HTML(progress_html(0.0), elem_id="training-progress")
                retrain_btn = gr.Button("Retrain now (admin)", elem_id="retrain")
                retrain_result = gr.Textbox(label="Retrain", interactive=False, elem_id="retrain-result")

        # The named endpoints are registered first so that they, not the UI events, own the names.
        gr.api(_user_errors(h.api_ask), api_name="ask", concurrency_id=MODEL_QUEUE, concurrency_limit=1)
        gr.api(_user_errors(h.api_accept), api_name="accept")
        gr.api(_user_errors(h.api_edit), api_name="edit")
        gr.api(_user_errors(h.api_reject), api_name="reject")
        gr.api(_user_errors(h.api_rank), api_name="rank")
        gr.api(_user_errors(h.api_status), api_name="status")
        gr.api(_user_errors(h.api_retrain), api_name="retrain")
        gr.api(_user_errors(h.api_activate), api_name="activate")
        gr.api(_user_errors(h.api_versions), api_name="versions")
        gr.api(_user_errors(ch.api_compare), api_name="compare", concurrency_id=MODEL_QUEUE, concurrency_limit=1)
        gr.api(_user_errors(ch.api_vote), api_name="vote")
        gr.api(_user_errors(ch.api_comparison), api_name="comparison")
        gr.api(_user_errors(ch.api_results), api_name="compare_results")
        gr.api(_user_errors(h.api_styles), api_name="styles")
        gr.api(_user_errors(h.api_style_check), api_name="style_check")
        gr.api(_user_errors(h.api_remove_style_check), api_name="remove_style_check")

        private = {"api_visibility": "private"}
        ask_event = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": 1, **private}
        asked = [*boxes, *ranks, badge, current, chooser, edit_box, all_bad, rank_btn, flags_md]
        ask_btn.click(_user_errors(h.ask_stream), [question, how_many], asked, **ask_event)
        question.submit(_user_errors(h.ask_stream), [question, how_many], asked, **ask_event)
        chooser.change(h.choose, [current, chooser], edit_box, **private)
        accept_btn.click(_user_errors(h.accept), [current, chooser, override], result, **private)
        edit_btn.click(_user_errors(h.edit), [current, chooser, edit_box, override], result, **private)
        reject_btn.click(_user_errors(h.reject), [current, chooser, reason], result, **private)
        rank_btn.click(_user_errors(h.rank), [current, all_bad, *ranks], [result, chooser, edit_box], **private)
        retrain_btn.click(_user_errors(h.retrain), None, retrain_result, concurrency_id="retrain", **private)
        activate_btn.click(_user_errors(h.activate), [choice, force], activate_result, **private).then(
            h.versions_table, None, [versions, choice], **private
        )
        refresh_btn.click(h.versions_table, None, [versions, choice], **private)
        style_save.click(_user_errors(h.save_style), [style_name, style_pattern, style_regex], [styles_table, style_result], **private)
        style_remove.click(_user_errors(h.remove_style), [style_name], [styles_table, style_result], **private)
        demo.load(h.styles_table, None, styles_table, **private)

        timer = gr.Timer(STATUS_REFRESH_S)
        timer.tick(h.status_panel, None, [status_md, progress_bar], **private, show_progress="hidden")
        timer.tick(lambda: _badge(service.models.version), None, badge, **private, show_progress="hidden")
        demo.load(h.status_panel, None, [status_md, progress_bar], **private)
        demo.load(h.versions_table, None, [versions, choice], **private)
        demo.load(ch.results, None, compare_outputs, **private)

    return demo
