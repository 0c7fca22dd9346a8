"""The Review tab's rubric ratings (``--rubric on``): one dropdown per axis, sent with a judgement."""

from __future__ import annotations

import gradio as gr

from ..feedback.rubric import Rubric


class RubricSection:
    """An accordion of one dropdown per rubric axis; construct inside the open Review tab.

    Nothing is laid out when the rubric is off (``rubric`` None): ``dropdowns`` is then empty and
    ``ratings`` always None, so the judging handlers need no special case.

    Args:
        rubric: the service's rubric, or None when it is off.
    """

    def __init__(self, rubric: Rubric | None) -> None:
        self.rubric = rubric
        self.dropdowns: list[gr.Dropdown] = []
        if rubric is None:
            return
        with gr.Accordion("Rubric ratings", open=False, elem_id="rubric-ratings"):
            if rubric.description:
                gr.Markdown(rubric.description)
            for axis in rubric.axes:
                # No default: an axis left blank is not rated, rather than rated at its first level.
                self.dropdowns.append(
                    gr.Dropdown(label=axis.question, choices=axis.levels, value=None, elem_id=f"rubric-{axis.name}")
                )

    def ratings(self, values: tuple | list) -> dict[str, str] | None:
        """``{axis: level}`` for the axes given a level (``values`` in ``dropdowns`` order); None when none is."""
        if self.rubric is None:
            return None
        rated = {axis.name: value for axis, value in zip(self.rubric.axes, values) if value}
        return rated or None

    def reset(self) -> dict:
        """Every dropdown back to blank, after a saved judgement, so the next one starts unrated."""
        return {dropdown: gr.update(value=None) for dropdown in self.dropdowns}
