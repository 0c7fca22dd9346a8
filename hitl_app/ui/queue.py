"""The Review tab's queue: take the next question of an imported set, or skip it, and see how far you are.

Next shows the item's candidates in the Review tab's own boxes and state, so the usual Accept,
Edit, Reject and Rank buttons judge it; the service lets only the reviewer who took an item judge it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from ..core.errors import UserError
from ..service.service import Caller, HITLService
from ..service.team_views import NextReply
from .errors import user_errors
from .format import md_text, queue_progress_line
from .login import Login

if TYPE_CHECKING:  # the Review tab composes this section; only its type is needed here
    from .review import ReviewTab

NO_ITEM = "Press **Next question** to take a question from the team's queue, or type your own and press Ask."


class QueueSection:
    """Next and Skip, the progress line and the item line; construct inside the open Review tab.

    The reference answer's accordion is laid out separately (``build_reference``), under the
    candidates it is compared with.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
        review: the Review tab whose question, candidate boxes and state Next fills.
    """

    def __init__(self, service: HITLService, login: Login, review: ReviewTab) -> None:
        self.service = service
        self.login = login
        self.review = review
        with gr.Row(equal_height=True):
            self.next_btn = gr.Button("Next question", variant="primary", elem_id="next-question", scale=1)
            self.skip_btn = gr.Button("Skip", elem_id="skip-item", scale=1)
            self.progress = gr.Markdown(elem_id="queue-progress")
        self.item = gr.Markdown(NO_ITEM, elem_id="queue-item")

    def build_reference(self) -> None:
        """Lay out the collapsed reference answer here; it shows only for an item whose set has one."""
        label = "Reference answer from the imported question set (not written by the model)"
        with gr.Accordion(label, open=False, visible=False, elem_id="queue-reference-panel") as self.reference_panel:
            self.reference = gr.Textbox(show_label=False, lines=4, interactive=False, elem_id="queue-reference")

    @property
    def item_outputs(self) -> list[gr.components.Component]:
        """The item line and the reference answer."""
        return [self.item, self.reference_panel, self.reference]

    @property
    def next_outputs(self) -> list[gr.components.Component]:
        """Everything Next updates: the Review tab's question, answer and ratings, and this section."""
        review = self.review
        return [*review.asked, review.question, *review.rubric.dropdowns, self.progress, *self.item_outputs]

    @property
    def skip_outputs(self) -> list[gr.components.Component]:
        """Everything Skip updates: the Review tab's question and answer, and this section."""
        review = self.review
        answer = [review.question, *review.boxes, review.current, review.edit_box, review.flags]
        return [*answer, self.progress, *self.item_outputs]

    # ----- handlers -----
    def next_item(self, request: gr.Request) -> dict:
        """Take the next queued item (generating its candidates if none were made ahead) and show it."""
        reply = self.service.next_item(self.login(request))
        progress = queue_progress_line(reply.progress)
        if reply.item_id is None or reply.generation_id is None:
            gr.Info("Nothing is left in the queue for you.")
            return {
                **self.review.cleared(), **self.left_item(), self.progress: progress,
                self.item: "**Nothing is left in the queue for you.** Type a question and press Ask, or wait for a new set.",
            }  # fmt: skip
        return {
            **self.review.show(reply.generation_id, reply.item_id),
            self.progress: progress,
            self.item: item_line(reply),
            self.reference_panel: gr.update(visible=bool(reply.reference), open=False),
            self.reference: reply.reference or "",
        }

    def skip(self, state: dict | None, request: gr.Request) -> dict:
        """Pass on the queued item shown: its slot goes to a colleague, and it is not offered to you again."""
        item_id = (state or {}).get("item_id")
        if not item_id:
            raise UserError("there is no queued item to skip; press Next question first")
        progress = self.service.skip(item_id, self.login(request))
        return {
            **self.review.cleared(),
            self.progress: queue_progress_line(progress),
            **self.left_item(),
            self.item: f"Skipped item `{item_id[:8]}`. Press **Next question** for another.",
        }

    def left_item(self) -> dict:
        """The item line back to its prompt, and the reference hidden: no queued item is shown."""
        return {self.item: NO_ITEM, self.reference_panel: gr.update(visible=False), self.reference: ""}

    def judged(self, state: dict | None, caller: Caller) -> dict:
        """The progress line after ``caller`` judged a queued item; nothing for a typed question."""
        if not (state or {}).get("item_id"):
            return {}
        return {self.progress: queue_progress_line(self.service.progress(caller))}

    def on_load(self, request: gr.Request) -> str:
        """The progress line of whoever opened the page."""
        return queue_progress_line(self.service.progress(self.login(request)))

    def wire(self, demo: gr.Blocks, model_queue: dict) -> None:
        """Bind Next (in the model's queue: it may generate), Skip and the progress line on page load."""
        private = {"api_visibility": "private"}
        self.next_btn.click(user_errors(self.next_item), None, self.next_outputs, **model_queue, **private)
        self.skip_btn.click(user_errors(self.skip), self.review.current, self.skip_outputs, **private)
        demo.load(user_errors(self.on_load), None, self.progress, **private)


def item_line(reply: NextReply) -> str:
    """The line naming the queued item's batch and metadata (the set's own text, shown literally)."""
    parts = [f"**Queued item** `{(reply.item_id or '')[:8]}`"]
    if reply.batch:
        parts.append(f"batch: {md_text(reply.batch)}")
    parts += [f"{md_text(key)}: {md_text(value)}" for key, value in sorted(reply.metadata.items())]
    if reply.version:
        parts.append(f"candidates by `{reply.version}`")
    return " · ".join(parts)
