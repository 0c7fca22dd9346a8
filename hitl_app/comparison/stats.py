"""Statistics of blind A/B votes between model versions: counts, win rate, intervals, tests, ratings.

A vote is ``(version_a, version_b, outcome)`` with outcome ``"a"`` (version_a's answer won),
``"b"``, ``"tie"`` or ``"both_bad"``; ``compare.VoteOutcome`` records (attributes ``a``, ``b``,
``outcome``, and ``length_a``/``length_b``) are accepted as they are. Everything here is pure:
numbers in, frozen dataclasses out, no I/O, no scipy.

Conventions, used everywhere below:

- A tie counts as half a win to each side (win rate, bootstrap, Bradley-Terry).
- "Both bad" says nothing about which version is better, so it is left out of the win rate and
  the ratings, and only reported as a count.
- Where there is nothing to compute from (no votes), figures are ``None`` rather than an error.

Which test for what. Votes are paired: each compares the two versions on the same question, so
"is A preferred?" is a one-sample question about the win rate, answered by ``sign_test`` (what
``compare_summary`` uses) and ``mcnemar``. A test of two *independent* samples (a two-proportion
z-test, a chi-square test of a 2x2 table) would not fit: feeding it A's wins and B's wins from the
same votes would double-count every vote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# The win rate and its interval are shared with the reward model's evaluation of a new version.
from ..evaluation.win_rate import _SCORE, OUTCOMES, ConfidenceInterval, bootstrap_ci, win_rate  # noqa: F401

LENGTH_BIAS_THRESHOLD = 1.2  # winners more than 20% longer than losers earns a note


class VoteRecord(Protocol):
    """Anything with the attributes of ``compare.VoteOutcome`` that matter here."""

    a: str
    b: str
    outcome: str


Vote = tuple[str, str, str] | VoteRecord


# ----- counts and win rate -----


@dataclass(frozen=True)
class PairCounts:
    """Votes between ``a`` and ``b``, seen from ``a``'s side (``losses`` are ``b``'s wins)."""

    a: str
    b: str
    wins: int
    ties: int
    losses: int
    both_bad: int

    @property
    def decided(self) -> int:
        """Votes that say which is better or that they are equal (everything but both_bad)."""
        return self.wins + self.ties + self.losses

    @property
    def total(self) -> int:
        return self.decided + self.both_bad


def pairwise_counts(votes: Sequence[Vote], a: str, b: str) -> PairCounts:
    """Count the votes between versions ``a`` and ``b``, whichever order each vote lists them in.

    Votes involving any other version are ignored.

    Raises:
        ValueError: ``a == b``, or a vote has an unknown outcome.
    """
    if a == b:
        raise ValueError(f"compare two different versions, not {a!r} with itself")
    wins = ties = losses = both_bad = 0
    for va, vb, outcome in map(_triple, votes):
        if {va, vb} != {a, b}:
            continue
        if outcome == "tie":
            ties += 1
        elif outcome == "both_bad":
            both_bad += 1
        elif (outcome == "a") == (va == a):
            wins += 1
        else:
            losses += 1
    return PairCounts(a=a, b=b, wins=wins, ties=ties, losses=losses, both_bad=both_bad)


def outcomes_for(votes: Sequence[Vote], a: str, b: str) -> list[str]:
    """The outcomes of the votes between ``a`` and ``b`` relabelled from ``a``'s side.

    In the result ``"a"`` always means version ``a`` won, whatever order the vote listed the pair
    in; ready for ``bootstrap_ci``.
    """
    out = []
    for va, vb, outcome in map(_triple, votes):
        if {va, vb} != {a, b} or a == b:
            continue
        if va != a and outcome in ("a", "b"):
            outcome = "b" if outcome == "a" else "a"
        out.append(outcome)
    return out


# ----- Bradley-Terry -----


@dataclass(frozen=True)
class BradleyTerry:
    """Bradley-Terry strengths (geometric mean 1) and Elo-like scores ``400 log10(s) + 1000``.

    ``P(i beats j) = s_i / (s_i + s_j)``; a difference of 400 in ``elo`` is 10:1 odds.
    """

    strengths: dict[str, float]
    elo: dict[str, float]
    iterations: int
    converged: bool
    prior: float  # virtual ties per version against a fixed opponent of strength 1


def bradley_terry(
    comparisons: Sequence[Vote],
    versions: Sequence[str] | None = None,
    iters: int = 10_000,
    tol: float = 1e-10,
    prior: float = 1.0,
) -> BradleyTerry:
    """Bradley-Terry maximum-likelihood strengths by Hunter's (2004) MM algorithm.

    Each update is ``s_i <- W_i / sum_j n_ij / (s_i + s_j)`` (``W_i`` wins of ``i``, ``n_ij``
    comparisons of ``i`` with ``j``); it raises the likelihood every step and converges to the
    MLE when one exists. A tie is half a win to each side; both_bad votes and a version compared
    with itself carry no information and are skipped.

    The prior. The MLE is infinite when a version never wins (its strength goes to 0) or, more
    generally, when some group of versions never beats the rest. So each version also gets
    ``prior`` virtual ties against a pseudo-opponent held at strength 1, i.e. ``prior / 2``
    virtual wins and losses; this keeps every strength finite and shrinks strengths a little
    towards each other (more so with few votes; with 30 wins in 40 votes over two versions the
    ratio is about 2.95 instead of 3). ``prior=0`` gives the plain MLE and raises when it does
    not exist.

    With the prior, each MM step is followed by the exact best common shift of all strengths
    (only the prior depends on it, and plain MM creeps along that direction for thousands of
    steps); both steps raise the penalised likelihood, so convergence is kept, in tens of steps.

    Args:
        comparisons: votes ``(version_a, version_b, outcome)`` (or ``VoteOutcome`` records).
        versions: rate only these (votes involving others are dropped); default: every version
            in a vote. Versions in no usable vote get no entry.
        iters: most MM steps.
        tol: stop when no log-strength moves by more than this in a step.
        prior: virtual ties per version against the pseudo-opponent (see above); 0 disables.

    Raises:
        ValueError: an unknown outcome, a negative prior, or ``prior=0`` with no finite MLE.
    """
    if prior < 0:
        raise ValueError(f"prior must be 0 or more, got {prior}")
    keep = None if versions is None else set(versions)
    pairs = []
    for va, vb, outcome in map(_triple, comparisons):
        if outcome == "both_bad" or va == vb or (keep is not None and not {va, vb} <= keep):
            continue
        pairs.append((va, vb, _SCORE[outcome]))
    names = sorted({v for va, vb, _ in pairs for v in (va, vb)})
    if not names:
        return BradleyTerry({}, {}, 0, True, prior)
    index = {v: i for i, v in enumerate(names)}
    k = len(names)
    wins = np.zeros((k, k))  # wins[i, j]: (half-)wins of i over j
    for va, vb, score in pairs:
        i, j = index[va], index[vb]
        wins[i, j] += score
        wins[j, i] += 1.0 - score
    if prior == 0:
        _check_mle_exists(wins, names)
    games = wins + wins.T  # n_ij, zero diagonal
    w = wins.sum(axis=1) + prior / 2
    log_s = np.zeros(k)
    converged = False
    it = 0
    for it in range(1, iters + 1):
        s = np.exp(log_s)
        denom = (games / (s[:, None] + s[None, :])).sum(axis=1) + prior / (s + 1.0)
        new = np.log(w) - np.log(denom)
        if prior == 0:  # the plain likelihood ignores scale: pin the geometric mean
            new -= new.mean()
        else:  # only the prior fixes the scale, and MM moves along it slowly: take that step exactly
            new += _best_shift(new)
        step = float(np.max(np.abs(new - log_s)))
        log_s = new
        if step < tol:
            converged = True
            break
    log_s = log_s - log_s.mean()  # geometric mean 1
    strengths = {v: float(math.exp(log_s[i])) for v, i in index.items()}
    elo = {v: 400.0 * float(log_s[i]) / math.log(10) + 1000.0 for v, i in index.items()}
    return BradleyTerry(strengths, elo, it, converged, prior)


def _best_shift(log_s: np.ndarray) -> float:
    """The common shift ``c`` that maximises the prior's likelihood of ``log_s + c``.

    Shifting every log-strength leaves the votes' likelihood unchanged, so this is an exact
    coordinate-ascent step: it solves ``sum_i sigma(log_s_i + c) = k / 2`` (the prior's score) by
    bisection; the left side increases with ``c``.
    """
    lo, hi = -float(log_s.max()) - 1.0, -float(log_s.min()) + 1.0  # root lies in between
    for _ in range(200):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(log_s + mid)))).sum() < len(log_s) / 2:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-14:
            break
    return (lo + hi) / 2


def _check_mle_exists(wins: np.ndarray, names: list[str]) -> None:
    """Ford's condition: the MLE is finite iff every version reaches every other by a chain of wins."""
    never = [names[i] for i in range(len(names)) if wins[i].sum() == 0]
    if never:
        raise ValueError(
            f"no finite Bradley-Terry estimate: {', '.join(never)} never won or tied; use prior > 0"
        )
    beats = wins > 0
    for graph in (beats, beats.T):
        seen, todo = {0}, [0]
        while todo:
            for j in np.flatnonzero(graph[todo.pop()]):
                if int(j) not in seen:
                    seen.add(int(j))
                    todo.append(int(j))
        if len(seen) < len(names):
            raise ValueError(
                "no finite Bradley-Terry estimate: some versions never beat or tie the others "
                "(or were never compared with them); use prior > 0"
            )


# ----- tests of significance -----


@dataclass(frozen=True)
class ChiSquare:
    """A chi-square test with one degree of freedom: the statistic and its p-value."""

    chi2: float
    p_value: float


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test that each side is equally likely to win a vote (ties dropped).

    ``p = min(1, 2 P(X <= min(wins, losses)))`` with ``X ~ Binomial(wins + losses, 1/2)``,
    computed exactly with integers. Ties say nothing about direction and are left out, as is
    usual for the sign test; they only pull the win rate towards 1/2. With no strict vote
    ``p = 1`` (``compare_summary`` reports None instead when there is no decided vote at all).

    Raises:
        ValueError: a negative count.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be non-negative, got wins={wins}, losses={losses}")
    n, m = wins + losses, min(wins, losses)
    tail, term = 0, 1  # term = C(n, k)
    for k in range(m + 1):
        tail += term
        term = term * (n - k) // (k + 1)
    return min(1.0, 2 * tail / 2**n)


def mcnemar(wins: int, losses: int) -> ChiSquare:
    """McNemar's chi-square test (1 df, no continuity correction) that a vote's two sides win equally often.

    For paired votes this is the chi-square test that fits: ``chi2 = (wins - losses)^2 / (wins +
    losses)``, ties left out as in ``sign_test``, whose large-sample approximation it is. With no
    strict vote ``chi2 = 0, p = 1``.

    Raises:
        ValueError: a negative count.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be non-negative, got wins={wins}, losses={losses}")
    n = wins + losses
    chi2 = 0.0 if n == 0 else (wins - losses) ** 2 / n
    return ChiSquare(chi2=chi2, p_value=math.erfc(math.sqrt(chi2 / 2)))


def decision(p: float | None, ahead: str | None = None, alpha: float = 0.05) -> str:
    """What to do given a p-value and the side that is ahead (a version or "A"/"B").

    ``"significant at α=0.05: prefer B"`` when ``p < alpha``, else
    ``"not significant: keep collecting votes"``; with no p-value (no votes, or only both_bad),
    ``"no deciding votes yet: keep collecting votes"``.
    """
    if p is None:
        return "no deciding votes yet: keep collecting votes"
    if p < alpha:
        return f"significant at α={alpha:g}" + (f": prefer {ahead}" if ahead else "")
    return "not significant: keep collecting votes"


# ----- length bias -----


@dataclass(frozen=True)
class LengthBias:
    """Mean answer length of winners and losers; figures None when either list is empty."""

    mean_winner: float | None
    mean_loser: float | None
    ratio: float | None  # mean_winner / mean_loser
    n: int  # winners measured
    note: str  # empty unless winners are markedly longer


def length_bias(
    winner_lengths: Sequence[float], loser_lengths: Sequence[float], threshold: float = LENGTH_BIAS_THRESHOLD
) -> LengthBias:
    """Compare the lengths of winning and losing answers (strict votes only, ties have neither).

    Human and model judges both tend to prefer longer answers; when winners are on average more
    than ``threshold`` times as long as losers (20% by default) the result carries a note, so a
    win is not read as better content without a look.
    """
    if not winner_lengths or not loser_lengths:
        return LengthBias(None, None, None, len(winner_lengths), "")
    mw, ml = float(np.mean(winner_lengths)), float(np.mean(loser_lengths))
    ratio = None if ml == 0 else mw / ml
    note = ""
    if ratio is not None and ratio > threshold:
        note = (
            f"winning answers are {ratio - 1:.0%} longer than losing ones on average: judges tend to "
            "prefer longer answers, so check that the preferred version is not winning on length alone"
        )
    return LengthBias(mw, ml, ratio, len(winner_lengths), note)


# ----- everything together -----


@dataclass(frozen=True)
class CompareSummary:
    """Everything about ``a`` against ``b`` that the UI shows; win rate and interval are ``a``'s."""

    counts: PairCounts
    win_rate: float | None
    ci: ConfidenceInterval
    p_value: float | None  # sign test
    ahead: str | None  # the version with more strict wins; None when even
    decision: str
    ratings: BradleyTerry
    lengths: LengthBias | None  # None when no lengths were given or recorded

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a two-column table."""
        c, a, b = self.counts, self.counts.a, self.counts.b
        rows = [
            ("votes", str(c.total)),
            (f"{a} wins / ties / {b} wins", f"{c.wins} / {c.ties} / {c.losses}"),
            ("both bad", str(c.both_bad)),
            (f"{a} win rate (tie = ½)", _fmt(self.win_rate, ".1%")),
            (f"{self.ci.level:.0%} CI (bootstrap)", f"{_fmt(self.ci.low, '.1%')} – {_fmt(self.ci.high, '.1%')}"),
            ("p (exact sign test)", _fmt(self.p_value, ".4f")),
            ("chi-square (McNemar), p", f"{mcnemar(c.wins, c.losses).chi2:.3f}, {mcnemar(c.wins, c.losses).p_value:.4f}"),
            ("decision", self.decision),
        ]
        rows += [(f"Elo {v}", f"{e:.0f}") for v, e in self.ratings.elo.items()]
        if self.lengths is not None:
            lb = self.lengths
            means = f"{_fmt(lb.mean_winner, '.0f')} / {_fmt(lb.mean_loser, '.0f')} (× {_fmt(lb.ratio, '.2f')})"
            rows.append(("length winner / loser", means))
            if self.lengths.note:
                rows.append(("note", self.lengths.note))
        return rows


def compare_summary(
    votes: Sequence[Vote],
    a: str,
    b: str,
    lengths: Sequence[tuple[float, float]] | None = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> CompareSummary:
    """Counts, win rate with bootstrap interval, sign test, decision, ratings and length bias.

    Args:
        votes: votes among any versions; only those between ``a`` and ``b`` are used.
        a, b: the versions compared; the win rate and interval are ``a``'s.
        lengths: per vote (aligned with ``votes``), the lengths of ``version_a``'s and
            ``version_b``'s answers as the vote lists them. Default: the votes' own
            ``length_a``/``length_b`` when they have them, else no length figures.
        alpha: significance level of the decision.
        n_boot, level, seed: as for ``bootstrap_ci``.

    Raises:
        ValueError: ``a == b``, ``lengths`` not aligned with ``votes``, or a bad vote.
    """
    counts = pairwise_counts(votes, a, b)
    p = None if counts.decided == 0 else sign_test(counts.wins, counts.losses)
    ahead = a if counts.wins > counts.losses else b if counts.losses > counts.wins else None
    if lengths is None and votes and all(hasattr(v, "length_a") and hasattr(v, "length_b") for v in votes):
        lengths = [(v.length_a, v.length_b) for v in votes]  # type: ignore[union-attr]
    if lengths is not None and len(lengths) != len(votes):
        raise ValueError(f"lengths has {len(lengths)} entries for {len(votes)} votes; give one per vote")
    bias = None
    if lengths is not None:
        winners, losers = [], []
        for (va, vb, outcome), (la, lb) in zip(map(_triple, votes), lengths):
            if {va, vb} == {a, b} and outcome in ("a", "b"):
                winners.append(la if outcome == "a" else lb)
                losers.append(lb if outcome == "a" else la)
        bias = length_bias(winners, losers)
    return CompareSummary(
        counts=counts,
        win_rate=win_rate(counts.wins, counts.ties, counts.losses),
        ci=bootstrap_ci(outcomes_for(votes, a, b), n_boot=n_boot, level=level, seed=seed),
        p_value=p,
        ahead=ahead,
        decision=decision(p, ahead, alpha),
        ratings=bradley_terry(votes, versions=[a, b]),
        lengths=bias,
    )


# ----- helpers -----


def _triple(vote: Vote) -> tuple[str, str, str]:
    if isinstance(vote, tuple | list):
        va, vb, outcome = vote
    else:
        va, vb, outcome = vote.a, vote.b, vote.outcome
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r} in vote {va!r} vs {vb!r}; use one of {', '.join(OUTCOMES)}")
    return va, vb, outcome


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)
