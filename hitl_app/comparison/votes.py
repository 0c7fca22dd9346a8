"""Blind A/B comparison of two versions: the pair under test, votes, and the votes' outcomes.

An admin picks two versions. For each question both answer; the clinician sees the answers left
and right in random order with the versions hidden, and votes left, right, tie, or both bad. The
comparison is stored as a ``Generation`` with ``purpose="compare"`` (two candidates, each with its
version) and the vote as a ``Feedback`` with ``action="vote"`` and the equivalent ranking, so
votes train like rankings: a strict vote is a DPO pair, "both bad" two KTO undesirable labels,
a tie nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..core.errors import UserError
from ..core.files import atomic_write_text
from ..feedback.ledger import Judgement
from ..feedback.records import utc_now

log = logging.getLogger(__name__)

Vote = Literal["left", "right", "tie", "both_bad"]
VOTES: dict[str, list[list[int]]] = {
    "left": [[0], [1]],
    "right": [[1], [0]],
    "tie": [[0, 1]],
    "both_bad": [],
}
Outcome = Literal["a", "b", "tie", "both_bad"]


class ComparisonSetup(BaseModel):
    """The two versions under comparison, as an admin chose them (``checkpoints/COMPARE``)."""

    a: str
    b: str
    set_by: str
    set_at: datetime = Field(default_factory=utc_now)


def vote_ranking(vote: str) -> list[list[int]]:
    """The ranking a vote stands for (candidate 0 is the left answer).

    Raises:
        UserError: not one of left, right, tie, both_bad.
    """
    if vote not in VOTES:
        raise UserError(f"unknown vote {vote!r}; vote one of: {', '.join(VOTES)}")
    return VOTES[vote]


class ComparisonStore:
    """Persists the pair under comparison, so a restart keeps comparing the same versions.

    Args:
        path: the JSON file (``checkpoints/COMPARE``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def get(self) -> ComparisonSetup | None:
        """The current pair, or None when none was chosen (or the file is unreadable, which is logged)."""
        try:
            return ComparisonSetup.model_validate_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            log.error("%s is unreadable (%s); no comparison is set", self.path, exc)
            return None

    def set(self, a: str, b: str, by: str) -> ComparisonSetup:
        """Persist a new pair (atomic replace + fsync)."""
        setup = ComparisonSetup(a=a, b=b, set_by=by)
        atomic_write_text(self.path, setup.model_dump_json(indent=2))
        return setup


@dataclass(frozen=True)
class VoteOutcome:
    """One vote, seen from the versions' side: ``a`` and ``b`` as stored left and right."""

    a: str
    b: str
    outcome: Outcome
    length_a: int  # characters of each answer, for the length-bias note
    length_b: int
    reviewer: str
    created_at: datetime


def vote_outcomes(judgements: list[Judgement]) -> list[VoteOutcome]:
    """Every A/B vote among ``judgements``, in store order."""
    out = []
    for j in judgements:
        fb, gen = j.feedback, j.generation
        if fb.action != "vote":
            continue
        ranking = fb.ranking or []
        if not ranking:
            outcome: Outcome = "both_bad"
        elif len(ranking) == 1:
            outcome = "tie"
        else:
            outcome = "a" if ranking[0] == [0] else "b"
        out.append(
            VoteOutcome(
                a=gen.version_of(0),
                b=gen.version_of(1),
                outcome=outcome,
                length_a=len(gen.candidates[0]),
                length_b=len(gen.candidates[1]),
                reviewer=fb.reviewer,
                created_at=fb.created_at,
            )
        )
    return out
