"""``python main.py import`` and ``python main.py export``: the team's data, without loading a model.

Both open the stores named by the app's flags, so they work beside a running app: an import is
one durable append the app picks up at its next queue refresh, and an export reads what is on disk.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import Settings
from ..feedback.export import ExportFilter, ExportKind, ExportSummary
from ..feedback.ledger import FeedbackLedger
from ..feedback.question_sets import Columns
from ..feedback.queue import ReviewQueue
from ..feedback.store import FeedbackStore, QueueStore
from ..safety.checker import SafetyChecker
from ..versions.registry import Registry
from .curation import Curation
from .importing import ImportReport, import_questions


def import_command(
    settings: Settings, file: str | Path, importer: str, columns: Columns | None, batch: str | None, priority: int = 0
) -> ImportReport:
    """Import a question set into the queue of ``settings.feedback_dir``.

    Raises:
        UserError: the file, a column or a question is unusable; nothing is stored.
    """
    queue = ReviewQueue(QueueStore(settings.feedback_dir), settings.reviews_per_item)
    return import_questions(
        Path(file), importer, queue, SafetyChecker(), redact=settings.redact_phi, columns=columns, batch=batch,
        priority=priority,
    )  # fmt: skip


def export_command(
    settings: Settings, kind: ExportKind, out: str | Path, filters: ExportFilter, name_reviewers: bool, licence: str
) -> ExportSummary:
    """Export the reviewed set from the stores of ``settings``.

    Raises:
        UserError: the output folder or a filter is unusable.
    """
    curation = Curation(
        FeedbackLedger(FeedbackStore(settings.feedback_dir)),
        ReviewQueue(QueueStore(settings.feedback_dir), settings.reviews_per_item),
        Registry(settings.checkpoints_dir),
        settings.reviews_per_item,
        settings.consensus_threshold,
        settings.holdout_fraction,
    )
    return curation.export(kind, Path(out), filters, name_reviewers, licence)
