"""Which judgements are kept out of training, to evaluate versions on.

A fixed share of the judgements that yield preference pairs (edits and rankings, and A/B votes)
is held out. The choice is a pure function of the feedback record's id, so it never changes:
a held-out judgement is never trained on in any round, and the held-out set only grows as
clinicians keep judging. Accepts and rejections are never held out; they yield no pair.
"""

from __future__ import annotations

import hashlib

from .ledger import Judgement

# Actions whose rows include DPO pairs: the ones a held-out preference accuracy can use.
HOLDOUT_ACTIONS = frozenset({"edit", "rank", "vote"})


def holdout_draw(record_id: str) -> float:
    """A number in [0, 1) fixed by ``record_id`` (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(judgement: Judgement, fraction: float) -> bool:
    """Whether ``judgement`` belongs to the evaluation slice rather than to training."""
    return judgement.feedback.action in HOLDOUT_ACTIONS and holdout_draw(judgement.feedback.id) < fraction
