"""The Compare tab and the ``/compare``, ``/vote``, ``/comparison`` and ``/compare_results`` endpoints.

Answers are shown as Left and Right with the versions hidden until the vote is saved. Handlers
are thin: the login becomes a ``Caller`` (through the main UI's ``caller``), the service does the rest.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from ..core.errors import UserError
from ..safety.checker import describe_flags, flags_json
from ..service.service import Caller, HITLService

VOTE_BUTTONS = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both bad"}


class CompareHandlers:
    """Callbacks of the Compare tab and its endpoints.

    Args:
        service: the service.
        caller: turns a Gradio request into the logged-in ``Caller``.
    """

    def __init__(self, service: HITLService, caller: Callable[[gr.Request | None], Caller]) -> None:
        self.service = service
        self.caller = caller

    def compare(self, prompt: str, request: gr.Request) -> tuple[str, str, dict, str]:
        gen = self.service.compare(prompt, self.caller(request))
        notes = [f"{side} safety flags: {describe_flags(gen.flags_of(i))}" for i, side in enumerate(("Left", "Right")) if gen.flags_of(i)]
        message = " ".join(["Which answer is better? The versions are hidden.", *notes])
        return gen.candidates[0], gen.candidates[1], {"id": gen.id}, message

    def vote(self, state: dict | None, vote: str, request: gr.Request) -> str:
        if not state or not state.get("id"):
            raise UserError("there is no comparison to vote on yet; ask a question first")
        fb = self.service.vote(state["id"], vote, self.caller(request))
        gen = self.service.ledger.generation(fb.generation_id)
        return f"Saved: {VOTE_BUTTONS[vote].lower()}. Left was {gen.version_of(0)}, right was {gen.version_of(1)}."

    def set_pair(self, a: str, b: str, request: gr.Request) -> str:
        pair = self.service.set_comparison(a, b, self.caller(request))
        return f"Comparing {pair.a} with {pair.b}."

    def results(self) -> tuple[list[list[str]], str, gr.Dropdown, gr.Dropdown]:
        r = self.service.comparison_results()
        versions = self.service.status()["versions"]
        title = f"**Comparing** `{r['a']}` with `{r['b']}`" if r["a"] else "Train a version to compare."
        return (
            r["rows"],
            title,
            gr.Dropdown(choices=versions, value=r["a"]),
            gr.Dropdown(choices=versions, value=r["b"]),
        )

    # ----- named endpoints -----
    def api_compare(self, prompt: str, request: gr.Request) -> dict:
        """Both versions under comparison answer; returns generation_id, left, right (versions hidden)."""
        gen = self.service.compare(prompt, self.caller(request))
        return {
            "generation_id": gen.id,
            "left": gen.candidates[0],
            "right": gen.candidates[1],
            "flags": flags_json(gen),
        }

    def api_vote(self, generation_id: str, vote: str, request: gr.Request) -> dict:
        """Vote on a comparison: left, right, tie or both_bad. Returns the saved vote and the versions."""
        fb = self.service.vote(generation_id, vote, self.caller(request))
        gen = self.service.ledger.generation(fb.generation_id)
        return {
            "saved": True,
            "feedback_id": fb.id,
            "vote": vote,
            "ranking": fb.ranking,
            "reviewer": fb.reviewer,
            "left_version": gen.version_of(0),
            "right_version": gen.version_of(1),
        }

    def api_comparison(self, a: str, b: str, request: gr.Request) -> dict:
        """Choose the two versions to compare (admin)."""
        return self.service.set_comparison(a, b, self.caller(request)).model_dump(mode="json")

    def api_results(self, request: gr.Request) -> dict:
        """Win/tie/loss, win rate with a bootstrap 95% CI, tests, Bradley-Terry ratings."""
        self.caller(request)
        return self.service.comparison_results()


def build_compare_tab(h: CompareHandlers, wrap: Callable[[Callable], Callable], model_queue: str) -> list:
    """The Compare tab's components and events; call inside an open ``gr.Tab``.

    Returns the components ``h.results`` fills, for the page's load event.

    Args:
        h: the handlers.
        wrap: turns ``UserError`` into ``gr.Error`` (the main UI's wrapper).
        model_queue: the concurrency id shared by everything that generates.
    """
    private = {"api_visibility": "private"}
    with gr.Row():
        pair_a = gr.Dropdown(label="Version A", choices=[], elem_id="compare-a")
        pair_b = gr.Dropdown(label="Version B", choices=[], elem_id="compare-b")
        set_btn = gr.Button("Compare these (admin)", elem_id="compare-set")
    title = gr.Markdown()
    question = gr.Textbox(label="Question", lines=2, elem_id="compare-question")
    ask_btn = gr.Button("Ask both", variant="primary", elem_id="compare-ask")
    with gr.Row():
        left = gr.Textbox(label="Left", lines=8, interactive=False, elem_id="compare-left")
        right = gr.Textbox(label="Right", lines=8, interactive=False, elem_id="compare-right")
    state = gr.State({})
    with gr.Row():
        buttons = {vote: gr.Button(label, elem_id=f"vote-{vote}") for vote, label in VOTE_BUTTONS.items()}
    result = gr.Textbox(label="Vote", interactive=False, elem_id="vote-result")
    table = gr.Dataframe(headers=["figure", "value"], interactive=False, elem_id="compare-results")
    refresh = gr.Button("Refresh results")

    outputs = [table, title, pair_a, pair_b]
    # The tab is laid out before the named endpoints are registered: its events get names of
    # their own, so that /compare and /vote stay the endpoints' names.
    ask_btn.click(
        wrap(h.compare), question, [left, right, state, result], concurrency_id=model_queue, concurrency_limit=1,
        api_name="compare_tab_ask", **private,
    )
    for vote, button in buttons.items():
        button.click(wrap(_voter(h, vote)), state, result, api_name=f"compare_tab_{vote}", **private).then(
            h.results, None, outputs, **private
        )
    set_btn.click(wrap(h.set_pair), [pair_a, pair_b], result, api_name="compare_tab_set", **private).then(
        h.results, None, outputs, **private
    )
    refresh.click(h.results, None, outputs, api_name="compare_tab_results", **private)
    return outputs


def _voter(h: CompareHandlers, vote: str) -> Callable:
    """A click handler casting ``vote`` (Gradio injects the request by its annotation)."""

    def handler(state: dict | None, request: gr.Request) -> str:
        return h.vote(state, vote, request)

    return handler
