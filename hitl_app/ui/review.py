"""The Review tab: ask a question, then rank the candidate answers, or accept, edit or reject one."""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from ..core.config import MAX_CANDIDATES
from ..core.errors import UserError
from ..feedback.ranking import format_order, ranks_to_order
from ..feedback.records import Feedback
from ..safety.checker import flags_markdown
from ..service.service import HITLService
from .errors import user_errors
from .format import badge, candidate_label
from .login import Login


class ReviewTab:
    """The Review tab's components and handlers; construct inside an open ``gr.Tab``.

    The answer being judged lives in ``gr.State`` as ``{"id", "version", "candidates"}``: it is
    the user's own, while the model is the service's.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        serving, k = service.serving_version, service.default_candidates
        sampled = service.sampling_is_random
        self.badge = gr.Markdown(badge(serving), elem_id="version-badge")
        self.question = gr.Textbox(label="Question", lines=3, elem_id="question")
        with gr.Row():
            self.how_many = gr.Dropdown(
                label="Candidates",
                choices=list(range(1, MAX_CANDIDATES + 1)) if sampled else [1],
                value=k,
                interactive=sampled,
                elem_id="how-many",
                scale=1,
            )
            self.ask_btn = gr.Button("Ask", variant="primary", elem_id="ask", scale=3)
        self.current = gr.State(None)
        self.boxes: list[gr.Textbox] = []
        self.ranks: list[gr.Dropdown] = []
        # Each candidate across the page, its rank under it: answers are read, not scrolled
        # in narrow boxes. No row per candidate, so hidden candidates leave no gap.
        for i in range(MAX_CANDIDATES):
            shown = i < k
            self.boxes.append(
                gr.Textbox(label=candidate_label(i, serving), lines=6, interactive=False, visible=shown, elem_id=f"answer-{i}")
            )
            self.ranks.append(
                gr.Dropdown(
                    label=f"Rank of candidate {i + 1} (1 = best)",
                    choices=[str(r + 1) for r in range(MAX_CANDIDATES)],
                    value=None,
                    visible=shown and k > 1,
                    elem_id=f"rank-{i}",
                )
            )
        with gr.Row():
            self.all_bad = gr.Checkbox(label="All unacceptable", visible=k > 1, elem_id="all-bad")
            self.rank_btn = gr.Button("Save ranking", visible=k > 1, elem_id="save-ranking")
        self.chooser = gr.Radio(
            label="Candidate to accept, edit or reject",
            choices=[str(i + 1) for i in range(k)],
            value="1",
            visible=k > 1,
            elem_id="chooser",
        )
        self.flags = gr.Markdown(elem_id="safety-flags")
        self.override = gr.Textbox(
            label="Override reason (needed to accept or save an answer with a high-severity safety flag)",
            lines=1,
            elem_id="override-reason",
        )
        self.accept_btn = gr.Button("Accept", variant="primary", elem_id="accept")
        with gr.Accordion("Edit into a correct answer", open=True):
            self.edit_box = gr.Textbox(label="Corrected answer", lines=8, elem_id="edit-text")
            self.edit_btn = gr.Button("Save edit", elem_id="save-edit")
        with gr.Accordion("Reject", open=True):
            self.reason = gr.Textbox(label="Reason", lines=2, elem_id="reject-reason")
            self.reject_btn = gr.Button("Reject", variant="stop", elem_id="reject")
        self.result = gr.Textbox(label="Last action", interactive=False, elem_id="result")

    @property
    def asked(self) -> list[gr.components.Component]:
        """Everything asking a question updates."""
        return [
            *self.boxes, *self.ranks, self.badge, self.current, self.chooser, self.edit_box, self.all_bad,
            self.rank_btn, self.flags,
        ]

    # ----- handlers -----
    def ask_stream(self, prompt: str, how_many: int | str, request: gr.Request) -> Iterator[dict]:
        """Clear the tab for ``how_many`` candidates, stream them in, then hold the recorded generation."""
        caller = self.login(request)
        k = self.service.candidates_for(int(how_many))
        ranked = k > 1
        yield {
            **{box: gr.update(value="", label=candidate_label(i, "…"), visible=i < k) for i, box in enumerate(self.boxes)},
            **{rank: gr.update(value=None, visible=ranked and i < k) for i, rank in enumerate(self.ranks)},
            self.badge: badge("…"),
            self.current: None,
            self.chooser: gr.update(choices=[str(i + 1) for i in range(k)], value="1", visible=ranked),
            self.edit_box: "",
            self.all_bad: gr.update(value=False, visible=ranked),
            self.rank_btn: gr.update(visible=ranked),  # a single answer has nothing to rank
            self.flags: "",
        }
        for texts, version, generation in self.service.ask_stream(prompt, caller, k):
            update: dict = {
                box: gr.update(value=text, label=candidate_label(i, version))
                for i, (box, text) in enumerate(zip(self.boxes, texts))
            }
            update[self.badge] = badge(version)
            if generation is not None:
                update[self.current] = {"id": generation.id, "version": generation.version, "candidates": generation.candidates}
                update[self.edit_box] = generation.candidates[0]
                update[self.flags] = flags_markdown(generation)
            yield update

    def choose(self, state: dict | None, choice: str | None) -> str:
        """The edit box starts from the candidate being judged."""
        if not state or not choice:
            return gr.skip()
        return state["candidates"][int(choice) - 1]

    def accept(self, state: dict | None, choice: str | None, override: str, request: gr.Request) -> str:
        """Accept the chosen candidate."""
        fb = self.service.accept(_current(state), self.login(request), _candidate(choice), override_reason=override)
        return self._saved(fb)

    def edit(self, state: dict | None, choice: str | None, text: str, override: str, request: gr.Request) -> str:
        """Save the edit box as the corrected answer."""
        fb = self.service.edit(_current(state), text, self.login(request), _candidate(choice), override_reason=override)
        return self._saved(fb)

    def reject(self, state: dict | None, choice: str | None, reason: str, request: gr.Request) -> str:
        """Reject the chosen candidate with a reason."""
        fb = self.service.reject(_current(state), reason, self.login(request), _candidate(choice))
        return self._saved(fb)

    def rank(self, state: dict | None, all_unacceptable: bool, r1, r2, r3, r4, request: gr.Request) -> dict:
        """Save the ranking; the best candidate is then chosen and put in the edit box."""
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
        fb = self.service.rank(generation_id, order, self.login(request))
        if fb.all_unacceptable:
            return {self.result: self._saved(fb)}
        best = fb.ranking[0][0]
        # The clinician can still correct the best candidate: select it and put it in the edit box.
        return {self.result: self._saved(fb), self.chooser: str(best + 1), self.edit_box: state["candidates"][best]}

    def _saved(self, fb: Feedback) -> str:
        gr.Info(f"Saved: {fb.action}")
        until = self.service.status().until_next_retrain
        what = fb.action if fb.ranking is None else f"ranking {format_order(fb.ranking)}"
        return f"Saved {what} ({fb.id[:8]}) by {fb.reviewer}. {until} judgement(s) until the next retrain."

    def serving_badge(self) -> str:
        """The badge naming the version serving now."""
        return badge(self.service.serving_version)

    def wire(self, model_queue: dict, timer: gr.Timer) -> None:
        """Bind the tab's events; the badge follows the serving version on every tick of ``timer``.

        Args:
            model_queue: the queue settings (concurrency id and limit) shared by everything that generates.
            timer: the page's status timer.
        """
        private = {"api_visibility": "private"}
        ask_event = {**model_queue, **private}
        asking = user_errors(self.ask_stream)
        self.ask_btn.click(asking, [self.question, self.how_many], self.asked, **ask_event)
        self.question.submit(asking, [self.question, self.how_many], self.asked, **ask_event)
        self.chooser.change(self.choose, [self.current, self.chooser], self.edit_box, **private)
        judged = [self.current, self.chooser]
        self.accept_btn.click(user_errors(self.accept), [*judged, self.override], self.result, **private)
        self.edit_btn.click(user_errors(self.edit), [*judged, self.edit_box, self.override], self.result, **private)
        self.reject_btn.click(user_errors(self.reject), [*judged, self.reason], self.result, **private)
        self.rank_btn.click(
            user_errors(self.rank), [self.current, self.all_bad, *self.ranks], [self.result, self.chooser, self.edit_box],
            **private,
        )
        timer.tick(self.serving_badge, None, self.badge, **private, show_progress="hidden")


def _candidate(choice: str | None) -> int:
    return int(choice) - 1 if choice else 0


def _current(state: dict | None) -> str:
    if not state or not state.get("id"):
        raise UserError("there is no finished answer to judge yet; ask a question first")
    return state["id"]
