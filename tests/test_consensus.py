"""consensus: ranked pairs and the resolution of k reviewers' judgements of one generation.

Pure functions over ``Feedback`` records built here; no store or model is involved.
"""

from __future__ import annotations


import pytest

from hitl_app.feedback.consensus import latest_judgements, ranked_pairs, resolve
from hitl_app.feedback.records import Feedback
from tests.helpers import judgement as fb





# ----- ranked_pairs -----

CYCLE = [[[0], [1], [2]], [[1], [2], [0]], [[2], [0], [1]]]  # Condorcet: every pair wins 2 to 1

# Worked by hand (4 candidates; candidate 3 is named by the last ranking only):
#   wins: 0>1 by 2:1 (rankings 1, 3), 1>2 by 3:1 (rankings 1, 2, 4), 2>0 by 2:1 (rankings 2, 3),
#         3>1 by 1:0 and 3>2 by 1:0 (ranking 4); 0 and 3 are never compared.
#   lock order: 1>2 (3 wins) first; then 0>1 and 2>0 (2 wins, 1 loss: index order); then 3>1, 3>2.
#   2>0 would close 0>1>2>0, so it is skipped. Locked: 1>2, 0>1, 3>1, 3>2.
#   depths: 0 and 3 have nothing above them (0); 1 is below 0 and 3 (1); 2 is below 1 (2).
FOUR = [[[0], [1], [2]], [[1], [2], [0]], [[2], [0], [1]], [[3], [1], [2]]]


@pytest.mark.parametrize(
    "rankings, candidates, expected",
    [
        pytest.param([[[2], [0], [1]]] * 3, 3, [[2], [0], [1]], id="unanimous"),
        pytest.param([[[1], [0, 2], [3]]], 4, [[1], [0, 2], [3]], id="single-ranking-unchanged"),
        pytest.param([[[2, 0], [1]]], 3, [[0, 2], [1]], id="single-ranking-tie-members-in-index-order"),
        pytest.param(CYCLE, 3, [[0], [1], [2]], id="condorcet-cycle-equal-strength-by-index"),
        pytest.param(CYCLE[::-1], 3, [[0], [1], [2]], id="condorcet-cycle-input-order-irrelevant"),
        # 1>2 and 2>0 win 5:2, 0>1 only 4:3: the weakest pair of the cycle is the one dropped.
        pytest.param([[[1], [2], [0]]] * 3 + [[[2], [0], [1]]] * 2 + [[[0], [1], [2]]] * 2, 3,
                     [[1], [2], [0]], id="condorcet-cycle-strongest-pairs-win"),
        pytest.param([[[0, 1], [2]], [[0], [1, 2]]], 3, [[0], [1], [2]], id="tie-groups-in-input"),
        pytest.param([[[0, 1], [2]]] * 2, 3, [[0, 1], [2]], id="tie-group-kept"),
        pytest.param([[[0, 1, 2]], [[0, 1, 2]]], 3, [[0, 1, 2]], id="full-tie"),
        pytest.param([[[0], [1]], [[1], [0]]], 2, [[0, 1]], id="opposed-equal-no-majority"),
        pytest.param([[[0], [1]], [[2], [1]]], 3, [[0, 2], [1]], id="missing-candidates-not-compared"),
        pytest.param([[[3], [0]]], 4, [[3], [0]], id="unnamed-candidates-left-out"),
        pytest.param([[[0], [1]], []], 2, [[0], [1]], id="empty-ranking-compares-nothing"),
        pytest.param([], 3, [], id="no-rankings"),
        pytest.param(FOUR, 4, [[0, 3], [1], [2]], id="four-candidates-by-hand"),
    ],
)
def test_ranked_pairs(rankings: list[list[list[int]]], candidates: int, expected: list[list[int]]) -> None:
    assert ranked_pairs(rankings, candidates) == expected


@pytest.mark.parametrize(
    "rankings, candidates, message",
    [
        pytest.param([[[0], [3]]], 3, "candidate index 3 is out of range", id="index-too-high"),
        pytest.param([[[0], [0]]], 3, "appears more than once", id="repeated"),
        pytest.param([[[0], []]], 3, "has an empty tie group", id="empty-group"),
        pytest.param([[[0]]], 0, "at least one candidate", id="no-candidates"),
    ],
)
def test_ranked_pairs_refuses_bad_rankings(rankings: list[list[list[int]]], candidates: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ranked_pairs(rankings, candidates)


# ----- resolve: labels -----


@pytest.mark.parametrize(
    "judgements, threshold, status, labels, support",
    [
        pytest.param([("A", "accept"), ("B", "accept"), ("C", "reject")], 0.6, "resolved", {0: "accept"}, 2 / 3,
                     id="2-of-3-accept-resolves"),
        pytest.param([("A", "accept"), ("B", "accept"), ("C", "reject")], 0.7, "disputed", {}, 2 / 3,
                     id="2-of-3-below-threshold"),
        pytest.param([("A", "accept"), ("B", "reject")], 0.6, "disputed", {}, 0.5, id="1-accept-1-reject"),
        pytest.param([("A", "accept"), ("B", "reject")], 0.5, "disputed", {}, 0.5, id="exact-split-never-agreed"),
        pytest.param([("A", "edit"), ("B", "reject")], 0.6, "resolved", {0: "reject"}, 1.0, id="edit-is-reject"),
        pytest.param([("A", "edit"), ("B", "accept")], 0.6, "disputed", {}, 0.5, id="edit-against-accept"),
        pytest.param([("A", "edit"), ("B", "edit"), ("C", "accept")], 0.6, "resolved", {0: "reject"}, 2 / 3,
                     id="two-edits-outvote-accept"),
        pytest.param([("A", "accept"), ("B", "accept")], 1.0, "resolved", {0: "accept"}, 1.0, id="unanimous-at-1"),
    ],
)
def test_resolve_labels(judgements: list[tuple[str, str]], threshold: float, status: str, labels: dict[int, str],
                        support: float) -> None:
    resolution = resolve([fb(r, action) for r, action in judgements], 1, threshold)
    assert resolution.status == status
    assert resolution.labels == labels
    assert resolution.label_support == {0: pytest.approx(support)}
    assert resolution.support == pytest.approx(support)
    assert resolution.reviewers == len(judgements)
    assert resolution.ranking is None and resolution.ranking_support is None
    assert resolution.edits == sum(action == "edit" for _, action in judgements)


def test_all_unacceptable_ranking_rejects_every_candidate() -> None:
    resolution = resolve([fb("A", "rank", ranking=[]), fb("B", "reject", 0), fb("B", "edit", 1)], 2, 0.6)
    assert resolution.status == "resolved"
    assert resolution.labels == {0: "reject", 1: "reject"}
    assert resolution.ranking is None  # [] is a label, not a ranking to merge
    assert resolution.edits == 1


def test_all_unacceptable_against_accept_disputes() -> None:
    resolution = resolve([fb("A", "rank", ranking=[]), fb("B", "accept", 1)], 2, 0.6)
    assert resolution.status == "disputed"
    assert resolution.labels == {0: "reject"}  # only A labelled candidate 0
    assert resolution.label_support == {0: 1.0, 1: 0.5}


@pytest.mark.parametrize(
    "history, labels, ranking",
    [
        pytest.param([("A", "accept", 0, None), ("A", "reject", 0, None), ("B", "reject", 0, None)],
                     {0: "reject"}, None, id="latest-label-wins"),
        pytest.param([("A", "rank", 0, [[0], [1]]), ("A", "rank", 0, [[1], [0]]), ("B", "rank", 0, [[1], [0]])],
                     {}, [[1], [0]], id="latest-ranking-wins"),
        pytest.param([("A", "accept", 0, None), ("A", "rank", 0, [])], {0: "reject", 1: "reject"}, None,
                     id="later-all-unacceptable-overrides-accept"),
        pytest.param([("A", "rank", 0, []), ("A", "accept", 0, None)], {0: "accept", 1: "reject"}, None,
                     id="later-accept-overrides-all-unacceptable"),
        pytest.param([("A", "rank", 0, []), ("A", "rank", 0, [[1], [0]])], {}, [[1], [0]],
                     id="later-ranking-withdraws-all-unacceptable"),
        pytest.param([("A", "vote", 0, [[1], [0]]), ("B", "rank", 0, [[1], [0]])], {}, [[1], [0]],
                     id="vote-is-a-ranking"),
    ],
)
def test_latest_judgement_per_reviewer_wins(history: list[tuple], labels: dict[int, str],
                                            ranking: list[list[int]] | None) -> None:
    feedbacks = [fb(r, action, c, rk) for r, action, c, rk in history]
    for order in (feedbacks, feedbacks[::-1]):  # created_at decides, not the order given
        resolution = resolve(order, 2, 0.6)
        assert resolution.labels == labels
        assert resolution.ranking == ranking
        assert resolution.status == "resolved"
        assert resolution.support == 1.0


def test_each_reviewer_counts_once() -> None:
    # A's two accepts are one label; with B's reject that is a 1:1 split, not 2:1.
    resolution = resolve([fb("A", "accept"), fb("A", "accept"), fb("B", "reject")], 1, 0.6)
    assert resolution.label_support == {0: 0.5}
    assert resolution.status == "disputed"
    assert latest_judgements([fb("A", "accept"), fb("A", "accept")], 1).labels == {("A", 0): "accept"}


# ----- resolve: rankings -----


@pytest.mark.parametrize(
    "threshold, status",
    [pytest.param(0.6, "resolved", id="support-above-threshold"), pytest.param(0.7, "disputed", id="below")],
)
def test_ranking_support_by_hand(threshold: float, status: str) -> None:
    # Merged FOUR is [[0, 3], [1], [2]] (see above). Ordered pairs and whether it keeps them:
    #   [0>1>2]: 0>1 y, 0>2 y, 1>2 y -> 3    [1>2>0]: 1>2 y, 1>0 n, 2>0 n -> 1
    #   [2>0>1]: 2>0 n, 2>1 n, 0>1 y -> 1    [3>1>2]: 3>1 y, 3>2 y, 1>2 y -> 3
    # support = 8 / 12 = 2/3.
    feedbacks = [fb(r, "rank", ranking=rk) for r, rk in zip("ABCD", FOUR)]
    resolution = resolve(feedbacks, 4, threshold)
    assert resolution.ranking == [[0, 3], [1], [2]]
    assert resolution.ranking_support == pytest.approx(2 / 3)
    assert resolution.support == pytest.approx(2 / 3)
    assert resolution.status == status
    assert resolution.reviewers == 4 and resolution.labels == {}


def test_condorcet_ranking_support() -> None:
    # Merged [[0], [1], [2]] keeps 0>1 and 1>2 wherever they appear (2 each) and 0>2 once: 5 of 9.
    resolution = resolve([fb(r, "rank", ranking=rk) for r, rk in zip("ABC", CYCLE)], 3, 0.6)
    assert resolution.ranking == [[0], [1], [2]]
    assert resolution.ranking_support == pytest.approx(5 / 9)


def test_all_tied_rankings_have_full_support() -> None:
    resolution = resolve([fb("A", "rank", ranking=[[0, 1]]), fb("B", "rank", ranking=[[0, 1]])], 2, 0.6)
    assert resolution.ranking == [[0, 1]]
    assert resolution.ranking_support == 1.0  # no ordered pair to disagree with
    assert resolution.status == "resolved"


def test_agreed_labels_with_a_disputed_ranking_dispute() -> None:
    feedbacks = [fb("A", "accept", 0), fb("B", "accept", 0),
                 fb("A", "rank", ranking=[[0], [1]]), fb("B", "rank", ranking=[[1], [0]])]
    resolution = resolve(feedbacks, 2, 0.6)
    assert resolution.labels == {0: "accept"}
    assert resolution.ranking == [[0, 1]]
    assert resolution.ranking_support == 0.0
    assert resolution.support == 0.0
    assert resolution.status == "disputed"


# ----- resolve: one reviewer, none, bad input -----


@pytest.mark.parametrize(
    "feedback, candidates, labels, ranking",
    [
        pytest.param(("accept", 1, None), 2, {1: "accept"}, None, id="accept"),
        pytest.param(("reject", 0, None), 1, {0: "reject"}, None, id="reject"),
        pytest.param(("edit", 0, None), 1, {0: "reject"}, None, id="edit"),
        pytest.param(("rank", 0, [[2], [0, 1]]), 3, {}, [[2], [0, 1]], id="rank"),
        pytest.param(("rank", 0, []), 2, {0: "reject", 1: "reject"}, None, id="all-unacceptable"),
    ],
)
def test_a_single_reviewer_resolves_to_their_judgement(feedback: tuple, candidates: int, labels: dict[int, str],
                                                        ranking: list[list[int]] | None) -> None:
    action, candidate, rk = feedback
    resolution = resolve([fb("A", action, candidate, rk)], candidates, 1.0)
    assert resolution.status == "resolved"
    assert resolution.labels == labels
    assert resolution.ranking == ranking
    assert resolution.support == 1.0
    assert resolution.reviewers == 1


def test_no_judgements_is_empty() -> None:
    resolution = resolve([], 2, 0.6)
    assert resolution.status == "empty"
    assert resolution.support is None and resolution.ranking is None
    assert resolution.labels == {} and resolution.label_support == {}
    assert resolution.reviewers == 0 and resolution.edits == 0


@pytest.mark.parametrize(
    "feedbacks, candidates, threshold, message",
    [
        pytest.param([], 2, 0.0, r"threshold must be in \(0, 1\], not 0.0", id="threshold-zero"),
        pytest.param([], 2, 1.5, r"threshold must be in \(0, 1\], not 1.5", id="threshold-above-one"),
        pytest.param([], 2, -0.2, "threshold", id="threshold-negative"),
        pytest.param([("accept", 2, None)], 2, 0.6, "candidate index 2 is out of range", id="label-out-of-range"),
        pytest.param([("rank", 0, [[0], [5]])], 2, 0.6, "candidate index 5 is out of range", id="ranking-out-of-range"),
        pytest.param([], 0, 0.6, "at least one candidate", id="no-candidates"),
    ],
)
def test_resolve_refuses_bad_input(feedbacks: list[tuple], candidates: int, threshold: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve([fb("A", action, c, rk) for action, c, rk in feedbacks], candidates, threshold)


def test_resolution_is_frozen_and_serialisable() -> None:
    resolution = resolve([fb("A", "accept")], 1, 0.6)
    assert resolution.model_dump(mode="json")["labels"] == {"0": "accept"}
    with pytest.raises(ValueError):
        resolution.status = "disputed"  # type: ignore[misc]
