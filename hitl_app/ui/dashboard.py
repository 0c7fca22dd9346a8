"""The Dashboard tab: the loop at a glance in Gradio's own plots, and the admin's taught styles.

The plots are refreshed by a ``gr.Timer`` from one read of the service (``dashboard_data``); the
frames they draw are built by the pure functions of ``figures``. The reviewers' agreement tables
(``agreement.AgreementSection``) follow the same timer.
"""

from __future__ import annotations

from typing import Protocol

import gradio as gr

from ..service.service import HITLService
from ..service.views import DashboardData
from .errors import user_errors
from .figures import GATE_METRICS, refresh
from .login import Login


class DashboardReader(Protocol):
    """What the dashboard's plots read: the service, or a stand-in in tests."""

    def dashboard_data(self) -> DashboardData:
        """Everything the plots draw, read once."""
        ...


def build_dashboard(
    service: DashboardReader, demo: gr.Blocks, every_s: float = 5.0, timer: gr.Timer | None = None
) -> list[gr.components.Component]:
    """Lay out the Dashboard tab's plots inside the current Blocks context; returns them in order.

    They are filled when the page loads and on every tick of ``timer`` (a new ``gr.Timer`` of
    ``every_s`` when none is given; the app passes the one its agreement tables also follow); the
    refresh is not an API endpoint.
    """
    series = {"x": "version", "y": "value", "color": "series"}
    plots: list[gr.components.Component] = []
    with gr.Row():
        plots.append(gr.LinePlot(x="time", y="judgements", color="kind", title="Judgements over time, by kind"))
        plots.append(gr.BarPlot(x="version", y="rate", color="kind", title="Kinds of judgement per version",
                                y_title="share of the version's judgements"))
    with gr.Row():
        plots.append(gr.LinePlot(x="version", y="value", color="figure",
                                 title="Training loss and preference margin per version"))
        plots.append(gr.LinePlot(**series, title="KL from the base per version (nats / token)"))
    for first in range(0, len(GATE_METRICS), 2):
        with gr.Row():
            for _, title, y_title in GATE_METRICS[first : first + 2]:
                plots.append(gr.LinePlot(**series, title=f"{title}, with the gate line", y_title=y_title))
    with gr.Row():
        plots.append(gr.BarPlot(x="pair", y="win_rate", color="version", title="Blind A/B win rates",
                                y_title="win rate (ties half)"))
        plots.append(gr.ScatterPlot(x="started", y="duration_s", color="outcome",
                                    title="Retrain timeline: start, duration, outcome", y_title="seconds",
                                    tooltip=["version", "outcome", "duration_s", "detail"]))
    with gr.Row():
        plots.append(gr.LinePlot(x="version", y="adoption", color="style", y_lim=[0, 1],
                                 title="Taught styles: share of each version's sample answers that show them",
                                 y_title="share of answers", tooltip=["version", "style", "adoption", "answers"]))
        plots.append(gr.BarPlot(x="reviewer", y="count", color="kind",
                                title="Edits per reviewer, and those that did not read as clinical text"))

    def redraw() -> dict:
        return dict(zip(plots, refresh(service.dashboard_data())))

    timer = timer or gr.Timer(every_s)
    gr.on([demo.load, timer.tick], redraw, None, plots, api_visibility="private", show_progress="hidden")
    return plots


class StylesSection:
    """The taught styles: admins define phrase or pattern checks that every version is measured on.

    Construct inside the open Dashboard tab.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        with gr.Accordion("Taught styles (admins define them; every version is checked)", open=False):
            self.table = gr.Dataframe(
                headers=["style", "pattern", "regular expression"], interactive=False, elem_id="styles-table"
            )
            with gr.Row():
                self.name = gr.Textbox(label="Style name", elem_id="style-name")
                self.pattern = gr.Textbox(
                    label="Phrase the answers must contain, or a regular expression", elem_id="style-pattern"
                )
                self.regex = gr.Checkbox(label="Regular expression", elem_id="style-regex")
            with gr.Row():
                self.save_btn = gr.Button("Save style check", elem_id="style-save")
                self.remove_btn = gr.Button("Remove style check", elem_id="style-remove")
            self.result = gr.Textbox(label="Style checks", interactive=False, elem_id="style-result")

    def rows(self) -> list[list]:
        """The style checks as table rows."""
        return [[c.name, c.pattern, c.regex] for c in self.service.defined_style_checks()]

    def save(self, name: str, pattern: str, regex: bool, request: gr.Request) -> dict:
        """Add or replace a style check (admin)."""
        checks = self.service.set_style_check(name, pattern, self.login(request), regex=regex)
        return {self.table: self.rows(), self.result: f"saved style check {name.strip()!r}; {len(checks)} defined"}

    def remove(self, name: str, request: gr.Request) -> dict:
        """Remove a style check (admin)."""
        name = (name or "").strip()
        self.service.remove_style_check(name, self.login(request))
        return {self.table: self.rows(), self.result: f"removed style check {name!r}"}

    def wire(self, demo: gr.Blocks) -> None:
        """Bind the section's events; the table is filled when the page loads."""
        private = {"api_visibility": "private"}
        outputs = [self.table, self.result]
        self.save_btn.click(user_errors(self.save), [self.name, self.pattern, self.regex], outputs, **private)
        self.remove_btn.click(user_errors(self.remove), [self.name], outputs, **private)
        demo.load(self.rows, None, self.table, **private)
