"""The Team tab's export and audit sections (admins): the reviewed set as a downloadable dataset,
and the audit log one server-side page at a time."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr
from pydantic import ValidationError

from ..core.errors import UserError
from ..feedback.export import KINDS, ExportFilter, ExportSummary, zip_export
from ..service.curation import AUDIT_KINDS
from ..service.service import HITLService
from ..service.team_views import AuditPage
from .errors import user_errors
from .login import Login

AUDIT_COLUMNS = ["when (UTC)", "who", "kind", "detail"]
ANY_KIND = "any"


class ExportSection:
    """Export the reviewed set (admin) into a fresh folder, and offer it zipped for download."""

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        self._folders: list[Path] = []  # earlier exports' temporary folders, removed at the next export
        self._lock = threading.Lock()
        with gr.Row():
            self.kind = gr.Dropdown(label="Dataset kind", choices=list(KINDS), value="dpo", elem_id="export-kind")
            self.licence = gr.Textbox(label="Licence named in the dataset card", value="other", elem_id="export-licence")
        with gr.Row():
            self.batch = gr.Textbox(label="Batch, by name or id (blank: all)", elem_id="export-batch")
            self.reviewer = gr.Textbox(label="Reviewer (blank: all)", elem_id="export-reviewer")
            self.since = gr.Textbox(label="Since (ISO date or time, UTC)", placeholder="2026-11-01", elem_id="export-since")
            self.until = gr.Textbox(
                label="Until (ISO date or time, UTC)", placeholder="2026-11-30T23:59", elem_id="export-until"
            )
        with gr.Row():
            self.resolved_only = gr.Checkbox(label="Resolved items only", elem_id="export-resolved-only")
            self.held_out = gr.Checkbox(label="Include the held-out slice", elem_id="export-held-out")
            self.name_reviewers = gr.Checkbox(label="Name reviewers (else pseudonyms)", elem_id="export-name-reviewers")
        self.button = gr.Button("Export", variant="primary", elem_id="export-button")
        self.file = gr.File(label="Exported dataset (zip)", interactive=False, elem_id="export-file")
        self.result = gr.Textbox(label="Export", interactive=False, elem_id="export-result")

    @property
    def inputs(self) -> list[gr.components.Component]:
        """The export's settings, in ``run``'s order."""
        return [self.kind, self.batch, self.reviewer, self.since, self.until, self.resolved_only, self.held_out,
                self.name_reviewers, self.licence]  # fmt: skip

    def run(
        self,
        kind: str,
        batch: str,
        reviewer: str,
        since: str,
        until: str,
        resolved_only: bool,
        held_out: bool,
        name_reviewers: bool,
        licence: str,
        request: gr.Request,
    ) -> dict:
        """Export into a new temporary folder and zip it; returns the zip for the download and a summary."""
        caller = self.login(request)
        filters = export_filter(batch, reviewer, since, until, resolved_only, held_out)
        # A fresh folder per export: two admins exporting at once never write into each other's.
        out = Path(tempfile.mkdtemp(prefix="hitl-export-")) / f"{kind}-dataset"
        summary = self.service.export(kind, out, caller, filters, bool(name_reviewers), (licence or "").strip() or "other")
        archive = zip_export(out)
        shutil.rmtree(out, ignore_errors=True)  # the zip holds it
        # Gradio copies a returned file into its own cache for the download, so an earlier export's
        # folder is no longer needed once the next export starts; this one's goes at the next.
        with self._lock:
            earlier, self._folders = self._folders, [out.parent]
        for folder in earlier:
            shutil.rmtree(folder, ignore_errors=True)
        return {self.file: str(archive), self.result: export_line(summary)}

    def wire(self) -> None:
        """Bind the Export button."""
        self.button.click(user_errors(self.run), self.inputs, [self.file, self.result], api_visibility="private")


def export_filter(
    batch: str, reviewer: str, since: str, until: str, resolved_only: bool, held_out: bool
) -> ExportFilter:
    """The filter the export boxes describe (blank boxes filter nothing).

    Raises:
        UserError: a date is unreadable, or ``since`` is after ``until``.
    """
    try:
        return ExportFilter(
            batch=_blank(batch), reviewer=_blank(reviewer), since=_blank(since), until=_blank(until),
            resolved_only=bool(resolved_only), include_held_out=bool(held_out),
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'filter'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"the export filter is unusable: {problems} (dates are ISO, like 2026-11-30)") from None


def export_line(s: ExportSummary) -> str:
    """One line on what an export wrote."""
    dates = f"{s.date_range[0][:10]} to {s.date_range[1][:10]}" if s.date_range else "no dates"
    return (
        f"Exported {s.rows} {s.kind} row(s) from {s.judgements} judgement(s) by {s.reviewers} reviewer(s), "
        f"{s.held_out_rows} held-out row(s); {dates}."
    )


class AuditSection:
    """The audit log (admin), newest first, filtered and paged by the service."""

    def __init__(self, service: HITLService, login: Login) -> None:
        self.service = service
        self.login = login
        with gr.Row():
            self.who = gr.Textbox(label="Who (blank: anyone)", elem_id="audit-who")
            self.kind = gr.Dropdown(label="Kind", choices=[ANY_KIND, *AUDIT_KINDS], value=ANY_KIND, elem_id="audit-kind")
            self.since = gr.Textbox(label="Since (ISO, UTC)", elem_id="audit-since")
            self.until = gr.Textbox(label="Until (ISO, UTC)", elem_id="audit-until")
        with gr.Row():
            self.page = gr.Number(label="Page", value=1, precision=0, minimum=1, elem_id="audit-page")
            self.button = gr.Button("Show", elem_id="audit-button")
        self.pages = gr.Markdown(elem_id="audit-pages")
        self.table = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, wrap=True, elem_id="audit-table")

    def show(self, who: str, kind: str, since: str, until: str, page: float | None, request: gr.Request) -> dict:
        """One page of the log: only that page's rows reach the browser."""
        caller = self.login(request)
        if page is None or page != int(page):
            raise UserError("the page must be a whole number from 1")
        kind = None if kind == ANY_KIND else kind
        found = self.service.audit(caller, _blank(who), kind, _blank(since), _blank(until), int(page))
        return {self.table: audit_rows(found), self.pages: pages_line(found)}

    def wire(self) -> None:
        """Bind Show (and Enter in the filters) to the page."""
        inputs, outputs = [self.who, self.kind, self.since, self.until, self.page], [self.table, self.pages]
        handler = user_errors(self.show)
        gr.on([self.button.click, self.who.submit, self.since.submit, self.until.submit, self.page.submit],
              handler, inputs, outputs, api_visibility="private")  # fmt: skip


def audit_rows(page: AuditPage) -> list[list[str]]:
    """The page's events as table rows."""
    return [[r.at.strftime("%Y-%m-%d %H:%M:%S"), r.who, r.kind, r.detail] for r in page.rows]


def pages_line(page: AuditPage) -> str:
    """``page N of M`` with the number of matching events."""
    return f"Page {page.page} of {page.pages} · {page.total} event(s)"


def _blank(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None
