"""Clinicians' judgements for the benchmark's rounds, written to the store as the service writes them.

Judgement ``i`` judges ``items.ITEMS[i % 20]`` and is of kind ``items.MIX[i % 20]``. With the
rows ``examples.rows_for`` makes of each kind, one round of N = 20 trains on:

| kind   | n | records                                                | rows                                     |
|--------|---|--------------------------------------------------------|------------------------------------------|
| edit   | 8 | the model's answer, edited to the clinician's answer   | SFT (edited) + DPO (edited > original) + KTO undesirable (original) |
| rank   | 6 | two candidates [clinician's, model's], ``[[0], [1]]``   | DPO (first > second)                     |
| accept | 4 | the model's answer, accepted                           | SFT + KTO desirable                      |
| reject | 2 | the model's answer, rejected with a reason             | KTO undesirable                          |

so ``sft`` 12, ``dpo`` 14, ``kto_desirable`` 4, ``kto_undesirable`` 10 and no dropped pairs
(the two ranked candidates always differ). With the app's ``--train-method auto`` the round runs
SFT on the 12 rows, then DPO on the 14 pairs; the KTO rows are counted but not trained on.
"""

from __future__ import annotations

from collections import Counter

from ..core.chat import chat_prompt
from ..core.config import Settings
from ..feedback.training_rows import rows_for
from ..feedback.holdout import is_held_out
from ..feedback.ledger import Judgement
from ..versions.registry import Registry
from ..feedback.records import Feedback, Generation
from ..feedback.store import FeedbackStore
from .items import ITEMS, MIX, REJECT_REASON
from .workspace import app_sampling


def planned_mix(count: int, start: int = 0) -> dict[str, int]:
    """How many judgements of each kind ``write_judgements(count, start)`` writes."""
    counts = Counter(MIX[i % len(MIX)] for i in range(start, start + count))
    return {kind: counts.get(kind, 0) for kind in ("edit", "rank", "accept", "reject")}


def _records(settings: Settings, version: str, prompt_tokens: int, i: int) -> tuple[Generation, Feedback]:
    """The generation and the judgement of it for judgement number ``i``."""
    prompt, answer, corrected = ITEMS[i % len(ITEMS)]
    kind = MIX[i % len(MIX)]
    # A ranking judges two candidates; the clinician's answer stands in for the better sample, so
    # the pair always differs and is never dropped as identical.
    candidates = [corrected, answer] if kind == "rank" else [answer]
    generation = Generation(
        reviewer="bench",
        prompt=prompt,
        system_prompt=settings.system_prompt,
        candidates=candidates,
        version=version,
        sampling=app_sampling(settings),
        prompt_tokens=prompt_tokens,
    )
    extra: dict = {
        "edit": {"text": corrected},
        "rank": {"ranking": [[0], [1]]},
        "accept": {},
        "reject": {"reason": REJECT_REASON},
    }[kind]
    feedback = Feedback(reviewer="bench", generation_id=generation.id, action=kind, **extra)
    return generation, feedback


def write_judgements(settings: Settings, tokenizer, count: int, start: int) -> list[Judgement]:
    """Append judgements ``start .. start + count - 1`` (see the module docstring) to the store.

    Records go through ``FeedbackStore`` exactly as the service writes them, so the trainer reads
    them through its ledger like real clinicians' judgements.

    Returns:
        The judgements written (offsets are 0: they are only for computing the expected rows).
    """
    store = FeedbackStore(settings.feedback_dir)
    version = Registry(settings.checkpoints_dir).active().version
    written = []
    for i in range(start, start + count):
        prompt = ITEMS[i % len(ITEMS)][0]
        messages = chat_prompt(prompt, settings.system_prompt)
        tokens = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        generation, feedback = _records(settings, version, len(tokens), i)
        store.append(generation)
        store.append(feedback)
        written.append(Judgement(0, feedback, generation))
    return written


def expected_rows(judgements: list[Judgement], holdout_fraction: float) -> dict[str, int]:
    """The row counts a round on exactly these new judgements (no replay) should report.

    Computed with the app's own ``examples.rows_for``, so a mismatch with the manifest's ``rows``
    means the round did not train on what the benchmark wrote.
    """
    counts = Counter({"sft": 0, "dpo": 0, "kto_desirable": 0, "kto_undesirable": 0, "dropped_identical_pairs": 0, "held_out": 0})
    for judgement in judgements:
        if is_held_out(judgement, holdout_fraction):
            counts["held_out"] += 1
            continue
        made = rows_for(judgement)
        counts["sft"] += len(made.sft)
        counts["dpo"] += len(made.dpo)
        counts["kto_desirable"] += sum(1 for r in made.kto if r["label"])
        counts["kto_undesirable"] += sum(1 for r in made.kto if not r["label"])
        counts["dropped_identical_pairs"] += made.dropped_pairs
    return dict(counts)
