"""The win rate of one side over another, ties as half a win, and its percentile-bootstrap interval.

Used by the blind A/B statistics (``comparison.stats``) and by the reward model's comparison of a
new version with the serving one (``reward_eval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTCOMES = ("a", "b", "tie", "both_bad")
# Score of side a in one outcome; both_bad has none (excluded from win rates and ratings).
_SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}


def win_rate(wins: int, ties: int, losses: int) -> float | None:
    """``(wins + ties / 2) / (wins + ties + losses)``: a tie is half a win; None with no votes.

    "Both bad" votes are not an argument: they belong to neither side and are reported apart
    (``PairCounts.both_bad``).
    """
    n = wins + ties + losses
    return None if n == 0 else (wins + 0.5 * ties) / n


@dataclass(frozen=True)
class ConfidenceInterval:
    """A percentile-bootstrap interval of the win rate; figures None when no vote was decided."""

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    n: int  # decided votes resampled (both_bad excluded)
    n_boot: int


def bootstrap_ci(
    outcomes: Sequence[str | float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> ConfidenceInterval:
    """Percentile bootstrap interval of the win rate (ties as half a win).

    The decided votes are resampled with replacement ``n_boot`` times, each resample's win rate
    is taken, and the interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles of those. A
    vote takes one of three scores (1, 1/2, 0), so a resample of ``n`` votes is fully described
    by how many of each it drew: that is drawn directly as a multinomial with the observed
    frequencies, which is the same distribution as drawing ``n`` indices, in O(n_boot) memory.

    Args:
        outcomes: per vote, ``"a"`` / ``"b"`` / ``"tie"`` / ``"both_bad"`` from the side of the
            version whose win rate is wanted (see ``outcomes_for``), or its score 1 / 0 / 0.5.
            ``"both_bad"`` is dropped.
        n_boot: number of resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the ``numpy.random.Generator``; equal seeds give equal intervals.

    Raises:
        ValueError: ``n_boot < 1``, ``level`` outside (0, 1), or an outcome that is neither.
    """
    problems = []
    if n_boot < 1:
        problems.append(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < level < 1:
        problems.append(f"level must lie strictly between 0 and 1, got {level}")
    if problems:
        raise ValueError("; ".join(problems))
    counts = np.zeros(3, dtype=np.int64)  # wins, ties, losses
    for o in outcomes:
        score = _SCORE.get(o) if isinstance(o, str) else float(o)
        if o == "both_bad":
            continue
        if score not in (1.0, 0.5, 0.0):
            raise ValueError(f"unknown outcome {o!r}: use one of {', '.join(OUTCOMES)} or a score 1, 0.5, 0")
        counts[{1.0: 0, 0.5: 1, 0.0: 2}[score]] += 1
    n = int(counts.sum())
    if n == 0:
        return ConfidenceInterval(None, None, None, level, 0, n_boot)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=n_boot)  # (n_boot, 3)
    rates = (draws[:, 0] + 0.5 * draws[:, 1]) / n
    low, high = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    estimate = win_rate(int(counts[0]), int(counts[1]), int(counts[2]))
    return ConfidenceInterval(estimate, float(low), float(high), level, n, n_boot)
