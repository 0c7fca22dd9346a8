"""The Team tab (admins): import a question set into the queue, settle disagreements, export, audit.

Each section calls the service, which refuses anyone but an admin; the tab shows its sections
only to admins (a clinician sees a short note) so that nobody is offered buttons that refuse them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import gradio as gr

from ..core.errors import UserError
from ..feedback.question_sets import Columns
from ..service.service import HITLService
from ..service.team_views import AdjudicationItem, ReviewerJudgement
from .curation import AuditSection, ExportSection
from .errors import user_errors
from .format import md_text
from .login import Login

ADMINS_ONLY = "The Team tab is for admins: importing question sets, settling disagreements, export and the audit log."
ADJUDICATION_COLUMNS = ["item", "question", "support", "judgements"]
# A 1-based ranking as an admin types it: candidate numbers best first, ">" between ranks, "=" between ties.
_RANKING = re.compile(r"\d+(\s*[>=]\s*\d+)*")


class TeamTab:
    """The Team tab's sections; construct inside an open ``gr.Tab``.

    Args:
        service: the service every handler calls.
        login: turns a request into the logged-in caller.
    """

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        self.note = gr.Markdown(ADMINS_ONLY, elem_id="team-note")
        with gr.Column(visible=False, elem_id="team-admin") as self.admin:
            with gr.Accordion("Import a question set", open=True):
                self.imports = ImportSection(service, login)
            with gr.Accordion("Adjudication: items whose reviewers disagree", open=True):
                self.adjudication = AdjudicationSection(service, login)
            with gr.Accordion("Export the reviewed set", open=True):
                self.export = ExportSection(service, login)
            with gr.Accordion("Audit log", open=False):
                self.audit = AuditSection(service, login)

    def sections(self, request: gr.Request) -> dict:
        """The admin's sections for an admin, the note for anyone else."""
        admin = self.login(request).is_admin
        return {self.admin: gr.update(visible=admin), self.note: gr.update(visible=not admin)}

    def wire(self, demo: gr.Blocks) -> None:
        """Bind every section's events; who sees the sections is settled when the page loads."""
        private = {"api_visibility": "private"}
        demo.load(user_errors(self.sections), None, [self.admin, self.note], **private)
        self.imports.wire()
        self.adjudication.wire()
        self.export.wire()
        self.audit.wire()


class ImportSection:
    """Upload a question set and import it into the queue as one batch, with Gradio's progress bar."""

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        self.file = gr.File(
            label="Question set: JSON Lines, JSON, CSV or Parquet", file_types=[".jsonl", ".json", ".csv", ".parquet"],
            type="filepath", elem_id="import-file",
        )  # fmt: skip
        with gr.Row():
            self.question_column = gr.Textbox(label="Question column (blank: guessed)", elem_id="import-question-column")
            self.reference_column = gr.Textbox(
                label="Reference answer column (blank: guessed)", elem_id="import-reference-column"
            )
        with gr.Row():
            self.batch = gr.Textbox(label="Batch name (blank: the file's name and the date)", elem_id="import-batch")
            self.priority = gr.Number(label="Priority (higher comes first)", value=0, precision=0, elem_id="import-priority")
        self.button = gr.Button("Import", variant="primary", elem_id="import-button")
        self.result = gr.Textbox(label="Import", interactive=False, elem_id="import-result")

    def run(
        self,
        path: str | None,
        question_column: str,
        reference_column: str,
        batch: str,
        priority: float | None,
        request: gr.Request,
        progress=gr.Progress(),
    ) -> str:
        """Import the uploaded file (admin); returns the report's one-line summary."""
        caller = self.login(request)
        if not path:
            raise UserError("choose a question set file to import")
        columns = Columns(question=_blank(question_column), reference=_blank(reference_column))
        report = self.service.import_file(
            Path(path), caller, columns, _blank(batch), _whole(priority, "the priority", default=0),
            progress=lambda fraction, message: progress(fraction, desc=message),
        )  # fmt: skip
        return report.summary()

    def wire(self) -> None:
        """Bind the Import button."""
        inputs = [self.file, self.question_column, self.reference_column, self.batch, self.priority]
        self.button.click(user_errors(self.run), inputs, self.result, api_visibility="private")


class AdjudicationSection:
    """The disputed items, one of them in detail with every judgement, and the admin's settling decision."""

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        self.refresh_btn = gr.Button("Refresh the list", elem_id="adjudicate-refresh")
        self.table = gr.Dataframe(headers=ADJUDICATION_COLUMNS, interactive=False, elem_id="adjudicate-table")
        self.choice = gr.Dropdown(label="Item to settle", choices=[], value=None, elem_id="adjudicate-item")
        self.detail = gr.Markdown(elem_id="adjudicate-detail")
        with gr.Row():
            self.action = gr.Radio(["accept", "reject", "rank"], value="accept", label="Decision", elem_id="adjudicate-action")
            self.candidate = gr.Number(
                label="Candidate to accept or reject", value=1, precision=0, minimum=1, elem_id="adjudicate-candidate"
            )
            self.ranking = gr.Textbox(
                label="Ranking, best first (for rank): e.g. 2 > 1 = 3, or none", elem_id="adjudicate-ranking"
            )
        self.reason = gr.Textbox(label="Reason (needed to reject)", elem_id="adjudicate-reason")
        self.button = gr.Button("Settle", variant="primary", elem_id="adjudicate-button")
        self.result = gr.Textbox(label="Adjudication", interactive=False, elem_id="adjudicate-result")

    @property
    def listed(self) -> list[gr.components.Component]:
        """What ``refresh`` fills."""
        return [self.table, self.choice, self.detail]

    def refresh(self, chosen: str | None, request: gr.Request) -> dict:
        """The waiting items; the chosen one stays chosen while it waits, else the oldest is chosen."""
        waiting = self.service.adjudications(self.login(request))
        rows = [[a.item_id[:8], _short(a.prompt, 120), "" if a.support is None else round(a.support, 2), len(a.judgements)]
                for a in waiting]  # fmt: skip
        ids = [a.item_id for a in waiting]
        value = chosen if chosen in ids else (ids[0] if ids else None)
        choices = [(f"{a.item_id[:8]} · {_short(a.prompt, 60)}", a.item_id) for a in waiting]
        detail = next((item_detail(a) for a in waiting if a.item_id == value), "No item is waiting for adjudication.")
        return {self.table: rows, self.choice: gr.update(choices=choices, value=value), self.detail: detail}

    def show(self, item_id: str | None, request: gr.Request) -> str:
        """The chosen item's candidates and every reviewer's judgement."""
        if not item_id:
            return "Choose an item to settle."
        waiting = self.service.adjudications(self.login(request))
        return next((item_detail(a) for a in waiting if a.item_id == item_id), "That item is no longer waiting.")

    def settle(
        self, item_id: str | None, action: str, candidate: float | None, ranking: str, reason: str, request: gr.Request
    ) -> str:
        """Record the admin's decision on the chosen item (candidates numbered from 1 here, from 0 in the service)."""
        caller = self.login(request)
        if not item_id:
            raise UserError("choose an item to settle")
        number = _whole(candidate, "the candidate", default=1)
        if number < 1:
            raise UserError("candidates are numbered from 1")
        order = zero_based_order(ranking) if action == "rank" else None
        reply = self.service.adjudicate(item_id, caller, action, number - 1, order, reason or None)
        if reply.ranking is not None:
            what = f"ranking {one_based(reply.ranking)}"
        else:
            what = f"{reply.action} candidate {reply.candidate + 1}"
        return f"Settled item {reply.item_id[:8]}: {what} ({reply.feedback_id[:8]}) by {reply.adjudicator}."

    def wire(self) -> None:
        """Bind the refresh, the choice and Settle (which refreshes the list: the item leaves it)."""
        private = {"api_visibility": "private"}
        self.refresh_btn.click(user_errors(self.refresh), self.choice, self.listed, **private)
        self.choice.input(user_errors(self.show), self.choice, self.detail, **private)
        inputs = [self.choice, self.action, self.candidate, self.ranking, self.reason]
        self.button.click(user_errors(self.settle), inputs, self.result, **private).success(
            user_errors(self.refresh), self.choice, self.listed, **private
        )


def item_detail(a: AdjudicationItem) -> str:
    """A disputed item as Markdown: its question and candidates, then every judgement in one table."""
    head = [f"**Item** `{a.item_id[:8]}`", f"candidates by `{a.version}`"]
    if a.batch:
        head.append(f"batch: {md_text(a.batch)}")
    if a.support is not None:
        head.append(f"support {a.support:.2f}")
    lines = [" · ".join(head), "", f"**Question:** {md_text(a.prompt)}", ""]
    lines += [f"**Candidate {i + 1}:** {md_text(text)}\n" for i, text in enumerate(a.candidates)]
    lines += ["| reviewer | judgement | candidate | ranking | edit or reason | rubric | when |", "|---|---|---|---|---|---|---|"]
    lines += [_judgement_row(j) for j in a.judgements]
    return "\n".join(lines)


def _judgement_row(j: ReviewerJudgement) -> str:
    said = j.text if j.action == "edit" else j.reason
    rubric = ", ".join(f"{axis}: {level}" for axis, level in (j.rubric or {}).items())
    ranked = j.action == "rank"
    cells = [
        md_text(j.reviewer), j.action, "" if ranked else str(j.candidate + 1), one_based(j.ranking) if ranked else "",
        md_text(said or ""), md_text(rubric), j.created_at.strftime("%Y-%m-%d %H:%M UTC"),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def one_based(ranking: list[list[int]] | None) -> str:
    """A ranking as the UI writes it: candidates numbered from 1, best first (``none``: all unacceptable)."""
    if not ranking:
        return "none"
    return " > ".join(" = ".join(str(i + 1) for i in group) for group in ranking)


def zero_based_order(text: str | None) -> str:
    """The service's form (from 0) of a ranking typed with candidates numbered from 1, like ``2 > 1 = 3``.

    Raises:
        UserError: the text is not such a ranking, or names candidate 0.
    """
    text = (text or "").strip()
    if text.lower() == "none":
        return "none"
    if not _RANKING.fullmatch(text):
        raise UserError(f"cannot read the ranking {text!r}: write candidate numbers best first, like '2 > 1 = 3', or 'none'")
    if any(int(n) < 1 for n in re.findall(r"\d+", text)):
        raise UserError("candidates are numbered from 1 in a ranking")
    return re.sub(r"\d+", lambda m: str(int(m.group()) - 1), text)


def _blank(text: str | None) -> str | None:
    """None for an empty box: the service then uses its default."""
    text = (text or "").strip()
    return text or None


def _whole(value: float | None, what: str, default: int) -> int:
    """A whole number from a ``gr.Number`` (``default`` when blank)."""
    if value is None:
        return default
    if value != int(value):
        raise UserError(f"{what} must be a whole number (got {value})")
    return int(value)


def _short(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width, placeholder=" …")
