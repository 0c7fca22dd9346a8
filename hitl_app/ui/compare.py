"""The Compare tab: two versions answer the same question, shown as Left and Right, voted on blind.

The versions are hidden until the vote is saved.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from ..core.errors import UserError
from ..safety.checker import describe_flags
from ..service.service import HITLService
from .errors import user_errors
from .login import Login

VOTE_BUTTONS = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both bad"}


class CompareTab:
    """The Compare tab's components, handlers and events; construct inside an open ``gr.Tab``.

    The tab is laid out, and its events bound, before the named endpoints are registered: its
    events get names of their own, so that ``/compare`` and ``/vote`` stay the endpoints' names.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
        model_queue: the queue settings (concurrency id and limit) shared by everything that generates.
    """

    def __init__(self, service: HITLService, login: Login, model_queue: dict) -> None:
        self.service = service
        self.login = login
        private = {"api_visibility": "private"}
        with gr.Row():
            self.pair_a = gr.Dropdown(label="Version A", choices=[], elem_id="compare-a")
            self.pair_b = gr.Dropdown(label="Version B", choices=[], elem_id="compare-b")
            set_btn = gr.Button("Compare these (admin)", elem_id="compare-set")
        self.title = gr.Markdown()
        question = gr.Textbox(label="Question", lines=2, elem_id="compare-question")
        ask_btn = gr.Button("Ask both", variant="primary", elem_id="compare-ask")
        with gr.Row():
            self.left = gr.Textbox(label="Left", lines=8, interactive=False, elem_id="compare-left")
            self.right = gr.Textbox(label="Right", lines=8, interactive=False, elem_id="compare-right")
        self.state = gr.State({})
        with gr.Row():
            buttons = {vote: gr.Button(label, elem_id=f"vote-{vote}") for vote, label in VOTE_BUTTONS.items()}
        self.result = gr.Textbox(label="Vote", interactive=False, elem_id="vote-result")
        self.table = gr.Dataframe(headers=["figure", "value"], interactive=False, elem_id="compare-results")
        refresh = gr.Button("Refresh results")

        ask_btn.click(
            user_errors(self.compare), question, [self.left, self.right, self.state, self.result],
            api_name="compare_tab_ask", **model_queue, **private,
        )
        for vote, button in buttons.items():
            button.click(user_errors(self._voter(vote)), self.state, self.result, api_name=f"compare_tab_{vote}", **private).then(
                self.results, None, self.results_outputs, **private
            )
        set_btn.click(user_errors(self.set_pair), [self.pair_a, self.pair_b], self.result, api_name="compare_tab_set", **private).then(
            self.results, None, self.results_outputs, **private
        )
        refresh.click(self.results, None, self.results_outputs, api_name="compare_tab_results", **private)

    @property
    def results_outputs(self) -> list[gr.components.Component]:
        """What ``results`` fills: the table, the title and the pair's two choosers."""
        return [self.table, self.title, self.pair_a, self.pair_b]

    def compare(self, prompt: str, request: gr.Request) -> dict:
        """Both versions answer; the answers are shown Left and Right, versions hidden."""
        gen = self.service.compare(prompt, self.login(request))
        notes = [f"{side} safety flags: {describe_flags(gen.flags_of(i))}" for i, side in enumerate(("Left", "Right")) if gen.flags_of(i)]
        message = " ".join(["Which answer is better? The versions are hidden.", *notes])
        return {self.left: gen.candidates[0], self.right: gen.candidates[1], self.state: {"id": gen.id}, self.result: message}

    def vote(self, state: dict | None, vote: str, request: gr.Request) -> str:
        """Save a blind vote and reveal which version wrote which side."""
        if not state or not state.get("id"):
            raise UserError("there is no comparison to vote on yet; ask a question first")
        fb = self.service.vote(state["id"], vote, self.login(request))
        gen = self.service.generation(fb.generation_id)
        return f"Saved: {VOTE_BUTTONS[vote].lower()}. Left was {gen.version_of(0)}, right was {gen.version_of(1)}."

    def set_pair(self, a: str, b: str, request: gr.Request) -> str:
        """Choose the pair to compare (admin)."""
        pair = self.service.set_comparison(a, b, self.login(request))
        return f"Comparing {pair.a} with {pair.b}."

    def results(self) -> dict:
        """The results table and title, and the pair's choosers set to the pair under comparison."""
        r = self.service.comparison_results()
        versions = self.service.version_names()
        return {
            self.table: r.rows,
            self.title: f"**Comparing** `{r.a}` with `{r.b}`" if r.a else "Train a version to compare.",
            self.pair_a: gr.Dropdown(choices=versions, value=r.a),
            self.pair_b: gr.Dropdown(choices=versions, value=r.b),
        }

    def _voter(self, vote: str) -> Callable:
        """A click handler casting ``vote`` (Gradio injects the request by its annotation)."""

        def handler(state: dict | None, request: gr.Request) -> str:
            return self.vote(state, vote, request)

        return handler
