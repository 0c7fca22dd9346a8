"""The Review tab: ask a question, or take the next one from the team's queue, then rank the candidate
answers, or accept, edit or reject one (with rubric ratings when the rubric is on)."""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from ..core.config import MAX_CANDIDATES
from ..core.errors import UserError
from ..feedback.ranking import format_order, ranks_to_order
from ..feedback.records import Feedback
from ..safety.checker import flags_markdown
from ..service.service import Caller, HITLService
from .errors import user_errors
from .format import badge, candidate_label
from .login import Login
from .queue import QueueSection
from .rubric import RubricSection


class ReviewTab:
    """The Review tab's components and handlers; construct inside an open ``gr.Tab``.

    The answer being judged lives in ``gr.State`` as ``{"id", "version", "candidates", "item_id"}``
    (``item_id`` None for a typed question): it is the user's own, while the model is the service's.
    The same Accept, Edit, Reject and Rank buttons judge a typed question and a queued item.

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
        self.queue = QueueSection(service, login, self)
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
        # The candidates are stored in the order shown, so a judgement's candidate number is what
        # the clinician saw; the scores are the reward model's, a learned proxy, not a colleague's vote.
        self.by_reward = gr.Checkbox(
            label="Order candidates by the reward model's score (best first)", value=False,
            visible=service.rewards_on, elem_id="by-reward",
        )  # fmt: skip
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
        self.queue.build_reference()
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
        self.rubric = RubricSection(service.rubric)
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
    def ask_stream(self, prompt: str, how_many: int | str, by_reward: bool, request: gr.Request) -> Iterator[dict]:
        """Clear the tab for ``how_many`` candidates, stream them in, then hold the recorded generation
        (its candidates in the reward model's order when ``by_reward``)."""
        caller = self.login(request)
        k = self.service.candidates_for(int(how_many))
        yield {**self._layout([""] * k, "…"), self.badge: badge("…"), self.current: None, self.edit_box: "", self.flags: ""}
        for texts, version, generation in self.service.ask_stream(prompt, caller, k, by_reward=bool(by_reward)):
            update: dict = {
                box: gr.update(value=text, label=candidate_label(i, version))
                for i, (box, text) in enumerate(zip(self.boxes, texts))
            }
            update[self.badge] = badge(version)
            if generation is not None:
                for i, box in enumerate(self.boxes[: len(generation.candidates)]):
                    update[box] = gr.update(value=generation.candidates[i], label=candidate_label(i, version, generation.rewards))
                update[self.current] = _state(generation.id, generation.version, generation.candidates, None)
                update[self.edit_box] = generation.candidates[0]
                update[self.flags] = flags_markdown(generation)
            yield update

    def _layout(self, texts: list[str], version: str, rewards: list[float] | None = None) -> dict:
        """The candidate boxes showing ``texts`` (one box each, the rest hidden), with blank ranks."""
        k, ranked = len(texts), len(texts) > 1
        return {
            **{box: gr.update(value=texts[i] if i < k else "", label=candidate_label(i, version, rewards), visible=i < k)
               for i, box in enumerate(self.boxes)},
            **{rank: gr.update(value=None, visible=ranked and i < k) for i, rank in enumerate(self.ranks)},
            self.chooser: gr.update(choices=[str(i + 1) for i in range(k)], value="1", visible=ranked),
            self.all_bad: gr.update(value=False, visible=ranked),
            self.rank_btn: gr.update(visible=ranked),  # a single answer has nothing to rank
        }  # fmt: skip

    def show(self, generation_id: str, item_id: str) -> dict:
        """The tab holding a queued item's stored candidates, as a finished Ask leaves it."""
        gen = self.service.generation(generation_id)
        return {
            **self._layout(gen.candidates, gen.version, gen.rewards),
            self.question: gen.prompt,
            self.badge: badge(gen.version),
            self.current: _state(gen.id, gen.version, gen.candidates, item_id),
            self.edit_box: gen.candidates[0],
            self.flags: flags_markdown(gen),
            **self.rubric.reset(),
        }

    def cleared(self) -> dict:
        """The tab holding no answer (the queued item was skipped, or none is left)."""
        return {self.question: "", **{box: "" for box in self.boxes}, self.current: None, self.edit_box: "", self.flags: ""}

    def choose(self, state: dict | None, choice: str | None) -> str:
        """The edit box starts from the candidate being judged."""
        if not state or not choice:
            return gr.skip()
        return state["candidates"][int(choice) - 1]

    # The request comes before the rubric's ratings: Gradio injects it among the named parameters
    # only, and the number of ratings follows the rubric file.
    def accept(self, state: dict | None, choice: str | None, override: str, request: gr.Request, *ratings: str) -> dict:
        """Accept the chosen candidate, with the rubric ratings given."""
        caller = self.login(request)
        fb = self.service.accept(
            _current(state), caller, _candidate(choice), override_reason=override, rubric=self.rubric.ratings(ratings)
        )
        return {**self._saved(fb, state, caller), **self.rubric.reset()}

    def edit(
        self, state: dict | None, choice: str | None, text: str, override: str, request: gr.Request, *ratings: str
    ) -> dict:
        """Save the edit box as the corrected answer, with the rubric ratings given."""
        caller = self.login(request)
        fb = self.service.edit(
            _current(state), text, caller, _candidate(choice), override_reason=override, rubric=self.rubric.ratings(ratings)
        )
        return {**self._saved(fb, state, caller), **self.rubric.reset()}

    def reject(self, state: dict | None, choice: str | None, reason: str, request: gr.Request, *ratings: str) -> dict:
        """Reject the chosen candidate with a reason, and the rubric ratings given."""
        caller = self.login(request)
        fb = self.service.reject(_current(state), reason, caller, _candidate(choice), rubric=self.rubric.ratings(ratings))
        return {**self._saved(fb, state, caller), **self.rubric.reset()}

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
        caller = self.login(request)
        fb = self.service.rank(generation_id, order, caller)
        if fb.all_unacceptable:
            return self._saved(fb, state, caller)
        best = fb.ranking[0][0]
        # The clinician can still correct the best candidate: select it and put it in the edit box.
        return {**self._saved(fb, state, caller), self.chooser: str(best + 1), self.edit_box: state["candidates"][best]}

    def _saved(self, fb: Feedback, state: dict, caller: Caller) -> dict:
        """The confirmation line, and the queue's progress line when the answer was a queued item."""
        gr.Info(f"Saved: {fb.action}")
        until = self.service.status().until_next_retrain
        what = fb.action if fb.ranking is None else f"ranking {format_order(fb.ranking)}"
        line = f"Saved {what} ({fb.id[:8]}) by {fb.reviewer}. {until} judgement(s) until the next retrain."
        return {self.result: line, **self.queue.judged(state, caller)}

    def serving_badge(self) -> str:
        """The badge naming the version serving now."""
        return badge(self.service.serving_version)

    def wire(self, demo: gr.Blocks, model_queue: dict, timer: gr.Timer) -> None:
        """Bind the tab's events; the badge follows the serving version on every tick of ``timer``.

        Args:
            demo: the app, whose page load fills the queue's progress line.
            model_queue: the queue settings (concurrency id and limit) shared by everything that generates.
            timer: the page's status timer.
        """
        private = {"api_visibility": "private"}
        ask_event = {**model_queue, **private}
        asking = user_errors(self.ask_stream)
        for trigger in (self.ask_btn.click, self.question.submit):
            trigger(asking, [self.question, self.how_many, self.by_reward], self.asked, **ask_event)
            # A typed question is not the queued item: its line and reference go (the claim stays open).
            trigger(self.queue.left_item, None, self.queue.item_outputs, **private, show_progress="hidden")
        self.chooser.change(self.choose, [self.current, self.chooser], self.edit_box, **private)
        judged, ratings = [self.current, self.chooser], self.rubric.dropdowns
        saved = [self.result, self.queue.progress, *ratings]
        self.accept_btn.click(user_errors(self.accept), [*judged, self.override, *ratings], saved, **private)
        self.edit_btn.click(user_errors(self.edit), [*judged, self.edit_box, self.override, *ratings], saved, **private)
        self.reject_btn.click(user_errors(self.reject), [*judged, self.reason, *ratings], saved, **private)
        self.rank_btn.click(
            user_errors(self.rank), [self.current, self.all_bad, *self.ranks],
            [self.result, self.queue.progress, self.chooser, self.edit_box], **private,
        )  # fmt: skip
        self.queue.wire(demo, model_queue)
        timer.tick(self.serving_badge, None, self.badge, **private, show_progress="hidden")


def _candidate(choice: str | None) -> int:
    return int(choice) - 1 if choice else 0


def _state(generation_id: str, version: str, candidates: list[str], item_id: str | None) -> dict:
    """What ``gr.State`` holds of the answer being judged."""
    return {"id": generation_id, "version": version, "candidates": candidates, "item_id": item_id}


def _current(state: dict | None) -> str:
    if not state or not state.get("id"):
        raise UserError("there is no finished answer to judge yet; ask a question first")
    return state["id"]
