"""What the team's judgements add up to: agreement figures, the exported dataset, the audit log.

``Curation`` reads the feedback ledger, the queue and the registry; it needs no model, so the
app and ``python main.py export`` share it. Agreement and the audit log are computed once per
change of the store (keyed by how many records there are), not once per page view.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import UserError
from ..feedback.agreement import AgreementReport, ItemJudgements, agreement
from ..feedback.export import CardInfo, ExportEntry, ExportFilter, ExportKind, ExportSummary, export_dataset
from ..feedback.holdout import is_held_out
from ..feedback.ledger import FeedbackLedger
from ..feedback.queue import ReviewQueue
from ..feedback.team import group_by_item, item_state, training_judgements
from ..versions.registry import Registry
from .team_views import AuditPage, AuditRow

AUDIT_KINDS = ("judgement", "adjudication", "override", "refused", "import", "activation")
AUDIT_PAGE_SIZE = 50


class Curation:
    """Agreement, export and audit over the stores.

    Args:
        ledger: the feedback ledger (refreshed before each use).
        queue: the review queue (refreshed before each use).
        registry: the checkpoint registry (for activations and the base model's name).
        reviews_per_item: ``--reviews-per-item``.
        threshold: ``--consensus-threshold``.
        holdout_fraction: ``--holdout-fraction``, to mark the held-out slice.
    """

    def __init__(
        self,
        ledger: FeedbackLedger,
        queue: ReviewQueue,
        registry: Registry,
        reviews_per_item: int,
        threshold: float,
        holdout_fraction: float,
    ) -> None:
        self.ledger = ledger
        self.queue = queue
        self.registry = registry
        self.k = reviews_per_item
        self.threshold = threshold
        self.holdout_fraction = holdout_fraction
        self._lock = threading.Lock()
        self._agreement: tuple[int, AgreementReport] | None = None
        self._audit: tuple[tuple, list[AuditRow]] | None = None

    # ----- agreement -----
    def agreement(self) -> AgreementReport:
        """Agreement of the team's judgements of queued items, recomputed only after new judgements."""
        self.ledger.refresh()
        self.queue.refresh()
        judgements = self.ledger.judgements()
        with self._lock:
            if self._agreement is not None and self._agreement[0] == len(judgements):
                return self._agreement[1]
            items, _ = group_by_item(judgements)
            units = []
            for item_id, review in items.items():
                if not review.reviews:
                    continue
                item = self.queue.item(item_id)
                units.append(
                    ItemJudgements(
                        item_id=item_id,
                        batch_id=self._batch_name(item.batch_id) if item else None,
                        candidates=review.candidates,
                        feedbacks=[j.feedback for j in review.reviews],
                    )
                )
            report = agreement(units, self.threshold)
            self._agreement = (len(judgements), report)
            return report

    def _batch_name(self, batch_id: str) -> str:
        batch = self.queue.batches.get(batch_id)
        return batch.name if batch else batch_id

    # ----- export -----
    def export(
        self,
        kind: ExportKind,
        out: Path,
        filters: ExportFilter | None = None,
        name_reviewers: bool = False,
        licence: str = "other",
    ) -> ExportSummary:
        """Write the reviewed set as a dataset (see ``feedback.export``).

        ``raw`` takes every judgement; the training kinds take what training uses: with several
        reviews per item, the consensus of resolved items, adjudications and every edit.

        Raises:
            UserError: the output folder or a filter is unusable.
        """
        self.ledger.refresh()
        self.queue.refresh()
        judgements = self.ledger.judgements()
        items, _ = group_by_item(judgements)
        states = {item_id: item_state(review, self.k, self.threshold) for item_id, review in items.items()}
        chosen = judgements if kind == "raw" else training_judgements(judgements, self.k, self.threshold)
        entries = []
        for j in chosen:
            item_id = j.feedback.settles or j.generation.item_id
            item = self.queue.item(item_id) if item_id else None
            batch = self.queue.batches.get(item.batch_id) if item else None
            entries.append(
                ExportEntry(
                    judgement=j,
                    batch_id=batch.id if batch else None,
                    batch_name=batch.name if batch else None,
                    item_id=item_id,
                    resolved=None if item_id is None else states.get(item_id) in ("resolved", "adjudicated"),
                    held_out=is_held_out(j, self.holdout_fraction),
                )
            )
        card = CardInfo(
            licence=licence,
            agreement=self.agreement().model_dump(mode="json", include={"team", "items", "judgements"}),
            name_reviewers=name_reviewers,
            versions=self.registry.versions(),
        )
        return export_dataset(kind, entries, Path(out), filters or ExportFilter(), card)

    # ----- audit -----
    def audit(
        self,
        who: str | None = None,
        kind: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        page: int = 1,
        page_size: int = AUDIT_PAGE_SIZE,
    ) -> AuditPage:
        """One page of every judgement, override, adjudication, refused question, import and
        activation, newest first, filtered by who, kind and time.

        Raises:
            UserError: an unknown kind, an unreadable date, or a page out of range.
        """
        if kind not in (None, "", *AUDIT_KINDS):
            raise UserError(f"unknown audit kind {kind!r}; use one of {', '.join(AUDIT_KINDS)}")
        start, end = _when(since, "since"), _when(until, "until")
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise UserError(f"page must be a whole number from 1 (got {page!r})")
        rows = [
            r
            for r in self._audit_rows()
            if (not who or r.who == who) and (not kind or r.kind == kind)
            and (start is None or r.at >= start) and (end is None or r.at <= end)
        ]  # fmt: skip
        pages = max(1, math.ceil(len(rows) / page_size))
        if page > pages:
            raise UserError(f"page {page} is past the last page ({pages})")
        return AuditPage(rows=rows[(page - 1) * page_size : page * page_size], total=len(rows), page=page, pages=pages)

    def _audit_rows(self) -> list[AuditRow]:
        self.ledger.refresh()
        self.queue.refresh()
        activations = self.registry.activations()
        key = (self.ledger.cursor, self.queue.store.path.stat().st_size if self.queue.store.path.exists() else 0, len(activations))
        with self._lock:
            if self._audit is not None and self._audit[0] == key:
                return self._audit[1]
        rows: list[AuditRow] = []
        for j in self.ledger.judgements():
            fb, gen = j.feedback, j.generation
            what = f"{fb.action} on {gen.id[:8]} ({gen.version})" + (f": {fb.reason}" if fb.reason else "")
            if fb.settles:
                rows.append(AuditRow(at=fb.created_at, who=fb.reviewer, kind="adjudication", detail=f"settled item {fb.settles[:8]}: {what}"))
            else:
                rows.append(AuditRow(at=fb.created_at, who=fb.reviewer, kind="judgement", detail=what))
            if fb.override_reason:
                rows.append(AuditRow(at=fb.created_at, who=fb.reviewer, kind="override", detail=f"{fb.action} despite flags: {fb.override_reason}"))
        for gen in self.ledger.refused_generations():
            rows.append(AuditRow(at=gen.created_at, who=gen.reviewer, kind="refused", detail=f"question refused ({gen.refused})"))
        for batch in self.queue.batches.values():
            rows.append(AuditRow(at=batch.created_at, who=batch.reviewer, kind="import",
                                 detail=f"{batch.name}: {batch.imported} imported, {batch.duplicates} duplicates, "
                                        f"{batch.refused} refused, from {batch.source}"))  # fmt: skip
        for a in activations:
            rows.append(AuditRow(at=a.activated_at, who=a.activated_by, kind="activation",
                                 detail=f"serving {a.version}" + (" (forced)" if a.forced else "") + (f": {a.reason}" if a.reason else "")))  # fmt: skip
        rows.sort(key=lambda r: r.at, reverse=True)
        with self._lock:
            self._audit = (key, rows)
        return rows


def _when(value: str | datetime | None, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise UserError(f"{what} must be an ISO date such as 2026-11-30 (got {value!r})") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
