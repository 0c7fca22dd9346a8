"""What the team-review actions answer with: the next item, progress, adjudications, the audit page."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ..feedback.queue import ReviewerProgress
from ..feedback.queue_records import QueueItem
from ..feedback.records import Feedback, Generation
from ..safety.checker import flags_json
from .views import View


class ProgressView(View):
    """One reviewer's standing in the queue."""

    done: int = Field(description="items this reviewer judged")
    skipped: int = Field(description="items this reviewer skipped")
    left: int = Field(description="items still open that this reviewer has not been shown")
    queued: int = Field(description="items in the queue")
    reviews_per_item: int = Field(description="reviewers per item (--reviews-per-item)")

    @classmethod
    def of(cls, progress: ReviewerProgress, queued: int, k: int) -> ProgressView:
        """The view of a reviewer's progress."""
        return cls(done=progress.done, skipped=progress.skipped, left=progress.left, queued=queued, reviews_per_item=k)


class NextReply(View):
    """The next queued item for this reviewer and its candidates: ``/next``. ``item_id`` is None when
    nothing is left for them."""

    item_id: str | None = Field(description="the queued item; None when nothing is left for this reviewer")
    generation_id: str | None = Field(description="the id every judgement of these candidates names")
    prompt: str | None = Field(description="the question as the model was asked it")
    candidates: list[str] = Field(description="the candidate answers")
    version: str | None = Field(description="the version that wrote the candidates")
    flags: list[list[dict]] = Field(description="each candidate's safety flags")
    reference: str | None = Field(description="the imported set's reference answer, if it has one")
    batch: str | None = Field(description="the name of the batch the item came from")
    metadata: dict[str, str] = Field(description="the item's metadata (specialty, source)")
    progress: ProgressView = Field(description="this reviewer's progress")

    @classmethod
    def of(cls, item: QueueItem | None, gen: Generation | None, batch: str | None, progress: ProgressView) -> NextReply:
        """The reply for an item and the generation shown for it (or for nothing left)."""
        if item is None or gen is None:
            return cls(
                item_id=None, generation_id=None, prompt=None, candidates=[], version=None, flags=[],
                reference=None, batch=None, metadata={}, progress=progress,
            )  # fmt: skip
        return cls(
            item_id=item.id,
            generation_id=gen.id,
            prompt=gen.prompt,
            candidates=gen.candidates,
            version=gen.version,
            flags=flags_json(gen),
            reference=item.reference,
            batch=batch,
            metadata=item.metadata,
            progress=progress,
        )


class ReviewerJudgement(View):
    """One reviewer's judgement of a disputed item, as the adjudicator sees it."""

    reviewer: str
    action: str
    candidate: int
    ranking: list[list[int]] | None
    text: str | None
    reason: str | None
    rubric: dict[str, str] | None
    created_at: datetime

    @classmethod
    def of(cls, fb: Feedback) -> ReviewerJudgement:
        """The view of one stored judgement."""
        return cls.model_validate(fb.model_dump(include=set(cls.model_fields)))


class AdjudicationItem(View):
    """A disputed item waiting for an admin: ``/adjudications``."""

    item_id: str
    generation_id: str
    prompt: str
    candidates: list[str]
    version: str
    batch: str | None
    support: float | None = Field(description="the weakest agreement behind the item (below the threshold)")
    judgements: list[ReviewerJudgement] = Field(description="every reviewer's judgements, side by side")


class AdjudicationReply(View):
    """A stored adjudication: ``/adjudicate``."""

    item_id: str
    feedback_id: str
    action: str
    candidate: int
    ranking: list[list[int]] | None
    adjudicator: str


class AuditRow(View):
    """One event of the audit log."""

    at: datetime
    who: str
    kind: str = Field(description="judgement, adjudication, override, refused, import or activation")
    detail: str


class AuditPage(View):
    """One page of the audit log, newest first: ``/audit``."""

    rows: list[AuditRow]
    total: int = Field(description="events matching the filters")
    page: int
    pages: int
