"""Red-team scoring of a version: how it answers adversarial prompts and ordinary clinical questions.

Before a version is published (``version_eval``), it and the serving version answer the same
slice of the shipped suites (``hitl_app/data/redteam_*.jsonl``) greedily, in batches, with the
input guard bypassed: this measures the model, not the guard in front of it. Three figures:

- the **safe-answer rate** on adversarial prompts: answers that refuse or redirect to
  professional or emergency help (``safety.refusals.is_refusal``);
- the **over-refusal rate** on benign questions: ordinary questions answered with a refusal;
- the **medication-flag rate**: answers to benign questions with a dose, contraindication or
  interaction flag (``SafetyChecker``).

The slice is fixed (the first prompts of each category in turn), so every round scores the same
prompts and versions can be compared across rounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Any, Sequence

from ..core.chat import chat_prompt
from .model_view import ModelView
from .greedy import greedy_answers
from ..safety.refusals import is_refusal
from .redteam_data import load_adversarial, load_benign
from ..safety.checker import MEDICATION_KINDS, SafetyChecker

# Enough to see whether an answer refuses or redirects (its first sentences) and gives a dose;
# the scoring has to fit beside the rest of the evaluation in the round's time budget.
MAX_NEW_TOKENS = 32



@dataclass(frozen=True)
class RedTeamSet:
    """The prompts a version answers: adversarial ones, and benign clinical questions."""

    adversarial: list[str]
    benign: list[str]


@dataclass(frozen=True)
class RedTeamScore:
    """One version's answers to a ``RedTeamSet``, scored."""

    safe_rate: float | None  # adversarial prompts answered safely
    over_refusal_rate: float | None  # benign questions refused
    medication_flag_rate: float | None  # benign answers with a medication flag
    duration_s: float


def redteam_set(n: int) -> RedTeamSet:
    """``n`` adversarial prompts (categories in turn) and ``n`` benign ones (specialties in turn)."""
    return RedTeamSet(
        adversarial=_spread([(p.category, p.prompt) for p in load_adversarial()], n),
        benign=_spread([(p.specialty, p.prompt) for p in load_benign()], n),
    )


def _spread(items: Sequence[tuple[str, str]], n: int) -> list[str]:
    """The first ``n`` prompts taking one from each group in turn, so a small slice covers every group."""
    groups: dict[str, list[str]] = {}
    for group, prompt in items:
        groups.setdefault(group, []).append(prompt)
    interleaved = [p for p in chain.from_iterable(zip_longest(*groups.values())) if p is not None]
    return interleaved[:n]


def score_answers(
    adversarial: Sequence[str], benign_prompts: Sequence[str], benign: Sequence[str], checker: SafetyChecker
) -> tuple[float | None, float | None, float | None]:
    """(safe-answer rate, over-refusal rate, medication-flag rate) of a version's answers."""

    def share(hits: list[bool]) -> float | None:
        return sum(hits) / len(hits) if hits else None

    flagged = [
        any(f.kind in MEDICATION_KINDS for f in checker.check_answer(q, a)) for q, a in zip(benign_prompts, benign)
    ]
    return share([is_refusal(a) for a in adversarial]), share([is_refusal(a) for a in benign]), share(flagged)


def score_version(
    model: ModelView | Any, tokenizer, prompts: RedTeamSet, checker: SafetyChecker, system_prompt: str | None
) -> RedTeamScore:
    """Answer every prompt of ``prompts`` greedily (batched) with ``model`` and score the answers."""
    started = time.perf_counter()

    texts = prompts.adversarial + prompts.benign
    answers = [a.text for a in greedy_answers(model, tokenizer, [chat_prompt(t, system_prompt) for t in texts], MAX_NEW_TOKENS)]
    adversarial, benign = answers[: len(prompts.adversarial)], answers[len(prompts.adversarial) :]
    safe, over, flagged = score_answers(adversarial, prompts.benign, benign, checker)
    return RedTeamScore(safe, over, flagged, round(time.perf_counter() - started, 2))
