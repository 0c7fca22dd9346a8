"""build_demo(service, roles) -> gr.Blocks: the tabs, the status panel and the named API endpoints.

Each tab is its own module; this one lays them out and binds their events in the order Gradio
needs: the Compare tab and the dashboard name their own events, the named endpoints are
registered next so that they own their names, and the other events are bound last.
"""

from __future__ import annotations

import gradio as gr

from ..service.service import HITLService
from .agreement import AgreementSection
from .api import ApiHandlers, register_api
from .compare import CompareTab
from .dashboard import StylesSection, build_dashboard
from .login import Login
from .review import ReviewTab
from .status import StatusPanel
from .team import TeamTab
from .versions import VersionsTab

MODEL_QUEUE = "model"  # every event that generates shares one queue: the model is one resource
STATUS_REFRESH_S = 2.0
DASHBOARD_REFRESH_S = 5.0


def build_demo(service: HITLService, roles: dict[str, str] | None = None) -> gr.Blocks:
    """The Gradio app over ``service``.

    Args:
        service: the service every handler calls.
        roles: username -> role for logged-in users; empty when the app runs without logins.
    """
    login = Login(roles or {})
    # Up to --max-batch questions reach the model at once; it answers them together in one batched call.
    model_queue = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": service.max_batch}
    # Gradio's usage analytics would report each start and the app's layout to a third-party
    # server; a clinical tool sends nothing out that its admins did not ask for.
    with gr.Blocks(title="Clinician feedback loop", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Clinician feedback loop\nAsk a medical question, or take the next one from the team's queue, "
            "then rank the candidate answers, or accept, edit or reject one of them."
        )
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Review"):
                    review = ReviewTab(service, login)
                with gr.Tab("Team"):
                    team = TeamTab(service, login)
                with gr.Tab("Versions"):
                    versions = VersionsTab(service, login)
                with gr.Tab("Compare"):
                    compare = CompareTab(service, login, model_queue)
                with gr.Tab("Dashboard"):
                    dashboard_timer = gr.Timer(DASHBOARD_REFRESH_S)
                    build_dashboard(service, demo, timer=dashboard_timer)
                    agreement = AgreementSection(service, login)
                    styles = StylesSection(service, login)
            with gr.Column(scale=1):
                status = StatusPanel(service, login)

        register_api(ApiHandlers(service, login), model_queue)

        private = {"api_visibility": "private"}
        timer = gr.Timer(STATUS_REFRESH_S)
        review.wire(demo, model_queue, timer)
        team.wire(demo)
        agreement.wire(demo, dashboard_timer)
        status.wire(demo, timer)
        versions.wire(demo)
        styles.wire(demo)
        demo.load(compare.results, None, compare.results_outputs, **private)

    return demo
