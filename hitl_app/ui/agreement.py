"""The Dashboard's agreement section: how far the team's reviewers agree, with the items behind each
figure, and the rubric ratings per version when the rubric is on."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..feedback.agreement import AgreementReport, Figures
from ..service.service import HITLService
from .errors import user_errors
from .format import cell
from .login import Login

ALPHA_COLUMNS = ["scope", "alpha (labels)", "items", "units", "alpha (rank positions)", "items (ranks)", "units (ranks)"]
PAIR_COLUMNS = ["reviewer", "other reviewer", "Cohen's kappa", "units"]
REVIEWER_COLUMNS = ["reviewer", "agreement with consensus", "units"]
RUBRIC_COLUMNS = ["version", "axis", "level", "ratings"]


class AgreementSection:
    """Tables of Krippendorff's alpha (team and per batch), pairwise kappa and agreement with consensus;
    construct inside the open Dashboard tab.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        with gr.Accordion("Agreement between reviewers (queued items)", open=True):
            self.summary = gr.Markdown(elem_id="agreement-summary")
            self.alphas = _table(ALPHA_COLUMNS, "agreement-alphas")
            with gr.Row():
                self.pairs = _table(PAIR_COLUMNS, "agreement-pairs")
                self.reviewers = _table(REVIEWER_COLUMNS, "agreement-reviewers")
        self.rubric: gr.Dataframe | None = None
        if service.rubric is not None:
            with gr.Accordion("Rubric ratings per version", open=False):
                self.rubric = _table(RUBRIC_COLUMNS, "rubric-counts")

    @property
    def outputs(self) -> list[gr.components.Component]:
        """The section's tables, in ``refresh``'s order."""
        tables = [self.summary, self.alphas, self.pairs, self.reviewers]
        return tables + ([self.rubric] if self.rubric is not None else [])

    def refresh(self, request: gr.Request) -> dict:
        """Every table from the service's figures now (recomputed there only after new judgements)."""
        report = self.service.agreement(self.login(request))
        out = {
            self.summary: f"**{report.items}** item(s) with **{report.judgements}** judgement(s) from reviewers of the queue. "
            "Alpha and kappa are blank where they are undefined (too few items, or a single label throughout).",
            **dict(zip([self.alphas, self.pairs, self.reviewers], agreement_frames(report))),
        }
        if self.rubric is not None:
            out[self.rubric] = rubric_frame(self.service.rubric_counts())
        return out

    def wire(self, demo: gr.Blocks, timer: gr.Timer) -> None:
        """Fill the tables on page load and on every tick of the dashboard's ``timer``."""
        gr.on([demo.load, timer.tick], user_errors(self.refresh), None, self.outputs, api_visibility="private",
              show_progress="hidden")  # fmt: skip


def agreement_frames(report: AgreementReport) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The alphas (team first, then each batch), the pairwise kappas and each reviewer's agreement with consensus."""
    alphas = [_alpha_row("team", report.team), *(_alpha_row(f"batch: {name}", f) for name, f in report.batches.items())]
    pairs = [[p.a, p.b, cell(p.kappa), p.units] for p in report.pairs]
    reviewers = [[r.reviewer, cell(r.agreement_with_consensus), r.units] for r in report.reviewers]
    return (
        pd.DataFrame(alphas, columns=ALPHA_COLUMNS),
        pd.DataFrame(pairs, columns=PAIR_COLUMNS),
        pd.DataFrame(reviewers, columns=REVIEWER_COLUMNS),
    )


def _alpha_row(scope: str, f: Figures) -> list:
    return [scope, cell(f.alpha_nominal), f.items_nominal, f.units_nominal, cell(f.alpha_ordinal), f.items_ordinal,
            f.units_ordinal]  # fmt: skip


def rubric_frame(counts: dict[str, dict[str, dict[str, int]]]) -> pd.DataFrame:
    """One row per version, axis and level, from ``{version: {axis: {level: n}}}``."""
    rows = [[version, axis, level, n] for version, axes in counts.items() for axis, levels in axes.items()
            for level, n in levels.items()]  # fmt: skip
    return pd.DataFrame(rows, columns=RUBRIC_COLUMNS)


def _table(headers: list[str], elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(headers=headers, interactive=False, elem_id=elem_id)
