"""The status panel beside the tabs: serving version, feedback, trainer progress, and the admin's retrain button."""

from __future__ import annotations

import time

import gradio as gr

from ..service.service import HITLService
from .errors import user_errors
from .format import progress_html, status_markdown
from .login import Login


class StatusPanel:
    """The status panel's components and handlers; construct inside the open column it sits in.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        gr.Markdown("### Status")
        self.status = gr.Markdown(elem_id="status")
        self.progress = gr.HTML(progress_html(0.0), elem_id="training-progress")
        self.retrain_btn = gr.Button("Retrain now (admin)", elem_id="retrain")
        self.retrain_result = gr.Textbox(label="Retrain", interactive=False, elem_id="retrain-result")

    def refresh(self) -> dict:
        """The panel's text and progress bar, from the service's status now."""
        s = self.service.status()
        t = s.trainer
        return {
            self.status: status_markdown(s),
            self.progress: progress_html(t.progress if t.state == "training" else 0.0),
        }

    def retrain(self, request: gr.Request, progress=gr.Progress()) -> str:
        """Start a round (admin) and follow it to its end.

        Raises:
            gr.Error: the round failed.
        """
        self.service.retrain(self.login(request))
        while True:
            t = self.service.trainer_status()
            progress(t.progress, desc=t.message or t.state)
            if t.state != "training":
                break
            time.sleep(0.5)
        if t.state == "failed":
            raise gr.Error(f"retrain failed: {t.last_error}")
        return t.message

    def wire(self, demo: gr.Blocks, timer: gr.Timer) -> None:
        """Bind the panel's events: filled on page load and on every tick of ``timer``."""
        private = {"api_visibility": "private"}
        outputs = [self.status, self.progress]
        self.retrain_btn.click(user_errors(self.retrain), None, self.retrain_result, concurrency_id="retrain", **private)
        timer.tick(self.refresh, None, outputs, **private, show_progress="hidden")
        demo.load(self.refresh, None, outputs, **private)
