"""The Versions tab: every version's figures, and the admin's activation and rollback."""

from __future__ import annotations

import gradio as gr

from ..service.service import HITLService
from ..service.views import VersionRow
from .errors import user_errors
from .format import cell
from .login import Login

# (VersionRow field, column header), in the table's order. Status and the gate's verdict come
# first: they are what an admin reads before anything else.
VERSION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("version", "version"),
    ("status", "status"),
    ("gate", "gate"),
    ("parent", "parent"),
    ("created_at", "created"),
    ("new_judgements", "new judgements"),
    ("sft_rows", "SFT rows"),
    ("dpo_rows", "DPO pairs"),
    ("kto_rows", "KTO labels"),
    ("dropped_pairs", "identical pairs dropped"),
    ("loss_before", "SFT loss before"),
    ("loss_after", "SFT loss after"),
    ("preference_method", "preference"),
    ("preference_loss", "pref. loss"),
    ("reward_accuracy", "reward accuracy"),
    ("reward_margin", "reward margin"),
    ("kl", "KL to base (train)"),
    ("heldout_pairs", "held-out pairs"),
    ("heldout_accuracy", "held-out accuracy"),
    ("reward_model_accuracy", "reward model held-out accuracy"),
    ("reward_model_margin", "reward model margin"),
    ("reward_model_pairs", "reward model pairs"),
    ("reward_mean", "reward (learned proxy)"),
    ("serving_reward_mean", "serving reward"),
    ("reward_win_rate", "reward win rate"),
    ("reward_win_rate_ci", "reward win rate 95% CI"),
    ("reward_length_correlation", "reward-length correlation"),
    ("edit_logprob", "held-out edit log-prob"),
    ("perplexity", "probe perplexity"),
    ("kl_base", "KL(new‖base)/token"),
    ("kl_serving", "KL(new‖serving)/token"),
    ("answer_tokens", "answer tokens"),
    ("safe_rate", "red-team safe rate"),
    ("over_refusal_rate", "benign refused"),
    ("medication_flag_rate", "medication flags"),
    ("eval_s", "eval seconds"),
    ("duration_s", "seconds"),
)


def version_table(rows: list[VersionRow]) -> list[list]:
    """The Versions table: one row per version, one cell per ``VERSION_COLUMNS`` field."""
    return [[cell(getattr(row, field)) for field, _ in VERSION_COLUMNS] for row in rows]


class VersionsTab:
    """The Versions tab's components and handlers; construct inside an open ``gr.Tab``.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        self.table = gr.Dataframe(
            headers=[header for _, header in VERSION_COLUMNS], interactive=False, elem_id="versions-table"
        )
        with gr.Row():
            self.choice = gr.Dropdown(label="Version", choices=[], elem_id="version-choice")
            self.activate_btn = gr.Button("Activate / roll back", elem_id="activate")
            self.refresh_btn = gr.Button("Refresh")
        self.force = gr.Checkbox(label="Force (serve a version the promotion gate held back)", elem_id="force")
        self.activate_result = gr.Textbox(label="Activation", interactive=False, elem_id="activate-result")

    def refresh(self) -> dict:
        """The table, and the version chooser set to the serving version."""
        rows = self.service.versions()
        return {
            self.table: version_table(rows),
            self.choice: gr.Dropdown(choices=[r.version for r in rows], value=self.service.serving_version),
        }

    def activate(self, version: str, force: bool, request: gr.Request) -> str:
        """Serve ``version`` (admin); ``force`` serves one the promotion gate held back."""
        reply = self.service.activate(version, self.login(request), force=force)
        forced = " (forced past the promotion gate; recorded)" if reply.forced else ""
        return f"Now serving {reply.serving_version} (was {reply.previous_version}){forced}."

    def wire(self, demo: gr.Blocks) -> None:
        """Bind the tab's events; the table is filled when the page loads."""
        private = {"api_visibility": "private"}
        outputs = [self.table, self.choice]
        self.activate_btn.click(
            user_errors(self.activate), [self.choice, self.force], self.activate_result, **private
        ).then(self.refresh, None, outputs, **private)
        self.refresh_btn.click(self.refresh, None, outputs, **private)
        demo.load(self.refresh, None, outputs, **private)
