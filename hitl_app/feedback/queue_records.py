"""Pydantic records of the review queue: imported question sets, and who took or skipped which item.

They are kept in ``feedback/queue.jsonl``, apart from the judgements, by the same kind of store
(``QueueStore``). The queue itself (what is left, for whom, in what order) is derived from them
by ``queue.ReviewQueue``; judgements of queued items stay in ``feedback.jsonl`` as ordinary
feedback on a generation that names its ``item_id``.

An import is written as its items followed by one ``ImportBatch`` record, in one write and one
fsync. Items count only once their batch record is on disk, so a crash in the middle of an import
leaves nothing half-imported.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter

from .records import SafetyFlag, _Record


class QueueItem(_Record):
    """One question to review, from an imported set; ``reviewer`` is who imported it."""

    kind: Literal["item"] = "item"
    batch_id: str = Field(min_length=1)
    prompt: str = Field(min_length=1, description="The question, redacted with --redact-phi.")
    reference: str | None = Field(default=None, description="A reference answer from the set, if it has one.")
    context: str | None = Field(default=None, description="Context shown with the question (PubMedQA-style).")
    external_id: str | None = Field(default=None, description="The item's id in the imported set.")
    metadata: dict[str, str] = Field(default_factory=dict, description="For example specialty and source.")
    priority: int = Field(default=0, description="Higher comes first in the queue.")
    flags: list[SafetyFlag] = Field(default_factory=list, description="The input guard's flags on the question.")
    redactions: dict[str, int] = Field(default_factory=dict)


class ImportBatch(_Record):
    """A completed import: written after its items, it makes them part of the queue."""

    kind: Literal["batch"] = "batch"
    name: str = Field(min_length=1)
    source: str = Field(min_length=1, description="The file or folder it was read from (its name only).")
    imported: int = Field(ge=0)
    duplicates: int = Field(ge=0, description="Questions dropped as repeats (normalised text) of this set or the queue.")
    refused: int = Field(ge=0, description="Questions the input guard refused; they are queued flagged.")
    redactions: dict[str, int] = Field(default_factory=dict)


class Claim(_Record):
    """A reviewer took one of an item's review slots, and was shown this generation of it."""

    kind: Literal["claim"] = "claim"
    item_id: str = Field(min_length=1)
    generation_id: str = Field(min_length=1)


class Skip(_Record):
    """A reviewer passed on an item; its slot is free again, and the item is not offered to them again."""

    kind: Literal["skip"] = "skip"
    item_id: str = Field(min_length=1)


QueueRecord = Annotated[Union[QueueItem, ImportBatch, Claim, Skip], Field(discriminator="kind")]
QUEUE_ADAPTER: TypeAdapter[QueueItem | ImportBatch | Claim | Skip] = TypeAdapter(QueueRecord)


def item_prompt(item: QueueItem) -> str:
    """The question as the model is asked it: with the item's context first, when it has one."""
    return f"{item.context}\n\nQuestion: {item.prompt}" if item.context else item.prompt
