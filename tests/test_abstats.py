"""abstats: counts, win rate, bootstrap interval, Bradley-Terry, sign and McNemar tests, length bias.

Pure functions: expected values are computed here by hand formulas (or written out, derived
analytically in the comments), never by calling the code under test a second way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from hitl_app.comparison.stats import (
    bootstrap_ci,
    bradley_terry,
    compare_summary,
    decision,
    length_bias,
    outcomes_for,
    pairwise_counts,
    sign_test,
    win_rate,
)


def votes(a: str, b: str, a_wins: int = 0, ties: int = 0, b_wins: int = 0, both_bad: int = 0) -> list:
    return [(a, b, "a")] * a_wins + [(a, b, "tie")] * ties + [(a, b, "b")] * b_wins + [(a, b, "both_bad")] * both_bad


# ----- the decision a p-value leads to -----


@pytest.mark.parametrize(
    "p, ahead, alpha, expected",
    [
        pytest.param(0.01, "B", 0.05, "significant at α=0.05: prefer B", id="significant-B"),
        pytest.param(0.01, "v0002", 0.05, "significant at α=0.05: prefer v0002", id="names-version"),
        pytest.param(0.049, "A", 0.05, "significant at α=0.05: prefer A", id="just-below"),
        pytest.param(0.05, "B", 0.05, "not significant: keep collecting votes", id="at-alpha"),
        pytest.param(0.3, "B", 0.05, "not significant: keep collecting votes", id="not-significant"),
        pytest.param(0.02, "B", 0.01, "not significant: keep collecting votes", id="stricter-alpha"),
        pytest.param(None, None, 0.05, "no deciding votes yet: keep collecting votes", id="no-votes"),
    ],
)
def test_decision(p, ahead, alpha, expected):
    assert decision(p, ahead, alpha) == expected


# ----- counts and win rate -----


def test_pairwise_counts_either_order_and_other_versions_ignored():
    v = (
        votes("A", "B", a_wins=3, ties=2, b_wins=1, both_bad=1)
        + votes("B", "A", a_wins=4, b_wins=5, ties=1)  # B listed first: "a" is a win for B
        + votes("A", "C", a_wins=9)
    )
    c = pairwise_counts(v, "A", "B")
    assert (c.wins, c.ties, c.losses, c.both_bad) == (3 + 5, 3, 1 + 4, 1)
    assert (c.decided, c.total) == (16, 17)
    flipped = pairwise_counts(v, "B", "A")
    assert (flipped.wins, flipped.losses) == (c.losses, c.wins)
    assert outcomes_for(v, "A", "B").count("a") == 8
    with pytest.raises(ValueError, match="itself"):
        pairwise_counts(v, "A", "A")
    with pytest.raises(ValueError, match="unknown outcome"):
        pairwise_counts([("A", "B", "left")], "A", "B")


@pytest.mark.parametrize(
    "wins, ties, losses, expected",
    [
        pytest.param(6, 0, 4, 0.6, id="no-ties"),
        pytest.param(5, 2, 3, 0.6, id="tie-is-half"),
        pytest.param(0, 4, 0, 0.5, id="all-ties"),
        pytest.param(0, 0, 3, 0.0, id="all-losses"),
        pytest.param(0, 0, 0, None, id="no-votes"),
    ],
)
def test_win_rate(wins, ties, losses, expected):
    assert win_rate(wins, ties, losses) == expected


# ----- bootstrap -----


def test_bootstrap_60_of_100():
    ci = bootstrap_ci(["a"] * 60 + ["b"] * 40)
    assert ci.estimate == 0.6 and ci.n == 100
    assert ci.low <= ci.estimate <= ci.high
    # normal approximation: 0.6 -+ 1.96 * sqrt(0.24 / 100) = [0.504, 0.696]
    assert 0.48 <= ci.low <= 0.53 and 0.67 <= ci.high <= 0.72


def test_bootstrap_narrows_with_more_votes_and_is_seeded():
    small = bootstrap_ci(["a"] * 60 + ["b"] * 40, seed=1)
    large = bootstrap_ci(["a"] * 600 + ["b"] * 400, seed=1)
    assert large.low <= 0.6 <= large.high
    assert (large.high - large.low) < 0.5 * (small.high - small.low)  # width ~ 1/sqrt(n)
    ties = ["a"] * 7 + ["tie"] * 6 + ["b"] * 5 + ["both_bad"] * 4
    assert bootstrap_ci(ties, seed=3) == bootstrap_ci(ties, seed=3)
    others = {(bootstrap_ci(ties, seed=s).low, bootstrap_ci(ties, seed=s).high) for s in range(5)}
    assert len(others) > 1
    assert bootstrap_ci(ties).n == 18  # both_bad dropped
    assert bootstrap_ci([1, 0.5, 0, 1]) == bootstrap_ci(["a", "tie", "b", "a"])  # scores or labels


def test_bootstrap_level_and_validation():
    v = ["a"] * 30 + ["b"] * 20
    narrow, wide = bootstrap_ci(v, level=0.5), bootstrap_ci(v, level=0.99)
    assert wide.low < narrow.low <= narrow.high < wide.high
    with pytest.raises(ValueError, match="n_boot.*level"):  # both problems in one error
        bootstrap_ci(v, n_boot=0, level=1.5)
    with pytest.raises(ValueError, match="unknown outcome"):
        bootstrap_ci(["a", "left"])


# ----- Bradley-Terry -----


def test_bt_two_versions_ratio_is_win_odds():
    v = votes("A", "B", a_wins=30, b_wins=10)
    exact = bradley_terry(v, prior=0)  # plain MLE: s_A / s_B = 30 / 10
    assert exact.strengths["A"] / exact.strengths["B"] == pytest.approx(3.0, rel=1e-8)
    assert exact.converged
    shrunk = bradley_terry(v)  # the prior pulls the ratio slightly towards 1
    assert 2.8 < shrunk.strengths["A"] / shrunk.strengths["B"] < 3.0
    big = bradley_terry(votes("A", "B", a_wins=3000, b_wins=1000))  # the prior washes out
    assert big.strengths["A"] / big.strengths["B"] == pytest.approx(3.0, rel=2e-3)


def test_bt_normalisation_and_elo():
    r = bradley_terry(votes("A", "B", a_wins=30, b_wins=10) + votes("B", "C", a_wins=5, b_wins=5))
    assert math.prod(r.strengths.values()) == pytest.approx(1.0)  # geometric mean 1
    for v, s in r.strengths.items():
        assert r.elo[v] == pytest.approx(400 * math.log10(s) + 1000)
    assert sum(r.elo.values()) / 3 == pytest.approx(1000)
    # 3:1 odds under the plain MLE is 400 log10(3) = 190.8 Elo points
    plain = bradley_terry(votes("A", "B", a_wins=30, b_wins=10), prior=0)
    assert plain.elo["A"] - plain.elo["B"] == pytest.approx(400 * math.log10(3))


def _gradient_ascent_bt(wins: np.ndarray, prior: float, steps: int = 5000, lr: float = 1.0) -> np.ndarray:
    """Maximise sum_ij w_ij log sigma(t_i - t_j) + prior ties vs a strength-1 opponent; centred log-strengths."""
    theta = np.zeros(len(wins))
    games = wins + wins.T
    for _ in range(steps):
        sig = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = wins.sum(1) - (games * sig).sum(1) + prior * (0.5 - 1 / (1 + np.exp(-theta)))
        theta += lr * grad / games.sum()
    return theta - theta.mean()


@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_bt_three_versions_match_direct_maximisation(prior):
    v = (
        votes("A", "B", a_wins=7, b_wins=3, ties=2)
        + votes("C", "B", a_wins=4, b_wins=6)  # listed in the other order
        + votes("A", "C", a_wins=8, b_wins=2, both_bad=5)
    )
    # half-wins matrix written out by hand: w[i, j] = wins of i over j, ties halved
    wins = np.array(
        [
            [0, 7 + 1, 8],  # A
            [3 + 1, 0, 6],  # B
            [2, 4, 0],  # C
        ],
        dtype=float,
    )
    expected = _gradient_ascent_bt(wins, prior)
    r = bradley_terry(v, prior=prior)
    got = np.log([r.strengths[k] for k in ("A", "B", "C")])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert r.converged


def test_bt_ties_count_half():
    # 10 wins, 10 ties, 0 losses = 15 half-wins to 5: ratio 3 with the plain MLE.
    r = bradley_terry(votes("A", "B", a_wins=10, ties=10), prior=0)
    assert r.strengths["A"] / r.strengths["B"] == pytest.approx(3.0, rel=1e-8)
    # two ties weigh exactly as one win each way, prior or not
    as_ties = bradley_terry(votes("A", "B", a_wins=4, ties=6, b_wins=1))
    as_split = bradley_terry(votes("A", "B", a_wins=4 + 3, b_wins=1 + 3))
    assert as_ties.strengths == pytest.approx(as_split.strengths)
    even = bradley_terry(votes("A", "B", ties=8))
    assert even.strengths == pytest.approx({"A": 1.0, "B": 1.0})


def test_bt_version_that_never_wins_stays_finite():
    v = votes("A", "B", a_wins=10) + votes("A", "C", a_wins=6, b_wins=4) + votes("C", "B", a_wins=5)
    r = bradley_terry(v)
    assert all(math.isfinite(s) and s > 0 for s in r.strengths.values())
    assert all(math.isfinite(e) for e in r.elo.values())
    assert r.strengths["B"] < r.strengths["C"] < r.strengths["A"]
    with pytest.raises(ValueError, match="B never won"):
        bradley_terry(v, prior=0)
    # every version wins something, yet {A} is never beaten: no finite MLE either
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry(votes("A", "B", a_wins=3) + votes("B", "C", a_wins=2, b_wins=2), prior=0)


def test_bt_versions_filter_and_absent_versions():
    v = votes("A", "B", a_wins=3, b_wins=1) + votes("A", "C", a_wins=1, b_wins=1)
    r = bradley_terry(v, versions=["A", "B", "Z"])
    assert set(r.strengths) == {"A", "B"}  # C filtered out, Z never appears
    only_bad = bradley_terry(votes("A", "B", both_bad=4))
    assert only_bad.strengths == {} and only_bad.elo == {}
    assert bradley_terry([]).strengths == {}


# ----- length bias -----


def test_length_bias():
    long = length_bias([300, 500], [200, 200])  # 400 / 200
    assert (long.mean_winner, long.mean_loser, long.ratio) == (400.0, 200.0, 2.0)
    assert "longer" in long.note and "100%" in long.note
    assert length_bias([230, 250], [200, 200]).note == ""  # 20% exactly: no note
    assert length_bias([241], [200]).note != ""
    assert length_bias([100], [200]).note == ""  # losers longer: no note
    empty = length_bias([], [])
    assert empty.ratio is None and empty.mean_winner is None and empty.note == ""


# ----- compare_summary and the edge cases -----


@dataclass(frozen=True)
class FakeVote:
    """Has the attributes of compare.VoteOutcome that abstats reads."""

    a: str
    b: str
    outcome: str
    length_a: int
    length_b: int


def test_compare_summary_clear_winner_with_length_records():
    v = [FakeVote("v1", "v2", "b", 100, 180)] * 25 + [FakeVote("v2", "v1", "b", 120, 100)] * 5
    v += [FakeVote("v1", "v2", "tie", 100, 100)] * 4 + [FakeVote("v1", "v3", "a", 1, 1000)] * 3
    s = compare_summary(v, "v1", "v2")
    assert (s.counts.wins, s.counts.ties, s.counts.losses) == (5, 4, 25)
    assert s.win_rate == pytest.approx((5 + 2) / 34)
    assert s.ci.low <= s.win_rate <= s.ci.high
    assert s.ahead == "v2"
    # sign test by hand: 2 * P(X <= 5), X ~ Bin(30, 1/2)
    assert s.p_value == pytest.approx(2 * sum(math.comb(30, k) for k in range(6)) / 2**30)
    assert s.decision == "significant at α=0.05: prefer v2"
    assert s.ratings.strengths["v2"] > s.ratings.strengths["v1"]
    assert s.lengths.mean_winner == pytest.approx((25 * 180 + 5 * 100) / 30)
    assert s.lengths.note
    table = dict(s.rows())
    assert table["decision"] == s.decision and "note" in table and "Elo v2" in table


def test_compare_summary_lengths_argument_and_close_race():
    v = votes("A", "B", a_wins=11, b_wins=9)
    s = compare_summary(v, "A", "B", lengths=[(100, 100)] * 20)
    assert s.decision == "not significant: keep collecting votes"
    assert s.p_value == pytest.approx(2 * sum(math.comb(20, k) for k in range(10)) / 2**20)
    assert s.lengths.ratio == 1.0 and s.lengths.note == ""
    assert compare_summary(v, "A", "B").lengths is None  # tuples carry no lengths
    with pytest.raises(ValueError, match="one per vote"):
        compare_summary(v, "A", "B", lengths=[(1, 1)])


def test_edge_no_votes():
    s = compare_summary([], "A", "B")
    assert s.counts.total == 0
    assert s.win_rate is None and s.ci.low is None and s.ci.estimate is None and s.p_value is None
    assert s.ahead is None and s.decision == "no deciding votes yet: keep collecting votes"
    assert s.ratings.strengths == {}
    assert all(isinstance(value, str) for _, value in s.rows())  # the UI table still renders


def test_edge_all_ties():
    s = compare_summary(votes("A", "B", ties=12), "A", "B")
    assert s.win_rate == 0.5
    assert (s.ci.low, s.ci.high) == (0.5, 0.5)
    assert s.p_value == 1.0 and s.ahead is None
    assert s.decision == "not significant: keep collecting votes"
    assert s.ratings.strengths == pytest.approx({"A": 1.0, "B": 1.0})
    assert sign_test(0, 0) == 1.0


def test_edge_all_both_bad():
    s = compare_summary(votes("A", "B", both_bad=7), "A", "B")
    assert (s.counts.both_bad, s.counts.decided) == (7, 0)
    assert s.win_rate is None and s.ci.low is None and s.p_value is None
    assert s.decision == "no deciding votes yet: keep collecting votes"
    assert s.ratings.strengths == {}
    assert dict(s.rows())["both bad"] == "7"


@pytest.mark.parametrize(("wins", "losses", "chi2"), [(60, 40, 4.0), (30, 30, 0.0), (0, 0, 0.0), (9, 1, 6.4)])
def test_mcnemar_is_the_paired_chi_square(wins: int, losses: int, chi2: float) -> None:
    from hitl_app.comparison.stats import mcnemar, sign_test

    result = mcnemar(wins, losses)
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))
    if wins + losses >= 100:  # the large-sample approximation of the exact sign test
        assert result.p_value == pytest.approx(sign_test(wins, losses), abs=0.02)
