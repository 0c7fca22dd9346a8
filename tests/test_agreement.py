"""agreement: Krippendorff's alpha, Cohen's kappa and agreement with consensus over team review.

Pure functions over ``Feedback`` records built here; alphas are checked against ``krippendorff``
called directly on reliability matrices written out by hand, and against values worked by hand.
"""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pytest

from hitl_app.feedback.agreement import ItemJudgements, agreement
from hitl_app.feedback.records import Feedback
from tests.helpers import judgement as fb

NAN = np.nan




def item(n: int, feedbacks: list[Feedback], candidates: int = 1, batch: str | None = "b1") -> ItemJudgements:
    return ItemJudgements(item_id=f"i{n}", batch_id=batch, candidates=candidates, feedbacks=feedbacks)


def labels_item(n: int, labels: dict[str, str], batch: str | None = "b1") -> ItemJudgements:
    """An item with one candidate, labelled by each reviewer (a = accept, r = reject)."""
    return item(n, [fb(r, "accept" if v == "a" else "reject") for r, v in labels.items()], batch=batch)


def team_alpha(matrix: list[list[float]], level: str) -> float:
    return float(krippendorff.alpha(reliability_data=np.array(matrix, dtype=float), level_of_measurement=level))


# ----- a tiny case worked by hand -----

# Two reviewers x four units (1 = accept, 0 = reject):  A: 1 1 0 0   B: 1 0 0 0
# Coincidences (each unit has 2 values, so each ordered pair weighs 1/(2-1) = 1):
#   o11 = 2 (unit 1), o10 = o01 = 1 (unit 2), o00 = 2 + 2 (units 3, 4); n1 = 3, n0 = 5, n = 8.
#   Do = (o01 + o10) / n = 2/8;  De = (n0*n1 + n1*n0) / (n (n - 1)) = 30/56.
#   alpha = 1 - Do/De = 1 - (1/4) * (56/30) = 1 - 7/15 = 8/15.
# Cohen's kappa: po = 3/4; A accepts 2/4, B 1/4; pe = (2/4)(1/4) + (2/4)(3/4) = 1/2;
#   kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2.
TINY = [{"A": "a", "B": "a"}, {"A": "a", "B": "r"}, {"A": "r", "B": "r"}, {"A": "r", "B": "r"}]


def test_nominal_alpha_and_kappa_by_hand() -> None:
    report = agreement([labels_item(n, labels) for n, labels in enumerate(TINY)], 0.6)
    assert report.team.alpha_nominal == pytest.approx(8 / 15)
    assert report.team.alpha_nominal == pytest.approx(team_alpha([[1, 1, 0, 0], [1, 0, 0, 0]], "nominal"))
    assert report.team.alpha_ordinal is None  # no rankings
    assert (report.team.units_nominal, report.team.items_nominal) == (4, 4)
    assert (report.team.units_ordinal, report.team.items_ordinal) == (0, 0)
    assert [(p.a, p.b, p.units) for p in report.pairs] == [("A", "B", 4)]
    assert report.pairs[0].kappa == pytest.approx(0.5)
    assert (report.items, report.judgements) == (4, 8)


# ----- three reviewers with a designed pattern -----

FLIPPED = {1, 4}  # the items where C labels candidate 0 the other way from A and B


def designed() -> list[ItemJudgements]:
    """Six items of two candidates. A and B always agree: candidate 0 is accepted on even items
    and edited (a reject) on odd ones, candidate 1 is rejected, and they rank candidate 0 first on
    even items. C agrees except on candidate 0 of items 1 and 4, and ranks [[0, 1]] on item 2."""
    items = []
    for n in range(6):
        feedbacks = []
        for r in "ABC":
            first = (n % 2 == 0) != (r == "C" and n in FLIPPED)
            feedbacks += [fb(r, "accept" if first else "edit", 0), fb(r, "reject", 1)]
            ranking = [[0], [1]] if n % 2 == 0 else [[1], [0]]
            feedbacks.append(fb(r, "rank", ranking=[[0, 1]] if r == "C" and n == 2 else ranking))
        items.append(item(n, feedbacks, candidates=2, batch="b1" if n < 3 else "b2"))
    return items


def designed_matrices() -> tuple[list[list[float]], list[list[float]]]:
    """Reviewers x units (item 0 cand 0, item 0 cand 1, item 1 cand 0, ...), written out by hand."""
    nominal = [
        [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0],  # A
        [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0],  # B
        [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # C: items 1 and 4 flipped
    ]
    ordinal = [  # rank positions: [[0], [1]] gives 1, 2; [[1], [0]] gives 2, 1; [[0, 1]] gives 1, 1
        [1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 1],
        [1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 1],
        [1, 2, 2, 1, 1, 1, 2, 1, 1, 2, 2, 1],
    ]
    return nominal, ordinal


def test_team_alpha_equals_krippendorff_on_the_hand_matrix() -> None:
    nominal, ordinal = designed_matrices()
    report = agreement(designed(), 0.6)
    assert report.team.alpha_nominal == pytest.approx(team_alpha(nominal, "nominal"))
    assert report.team.alpha_ordinal == pytest.approx(team_alpha(ordinal, "ordinal"))
    assert 0 < report.team.alpha_nominal < 1 and 0 < report.team.alpha_ordinal < 1
    assert report.team.units_nominal == report.team.units_ordinal == 12
    assert report.team.items_nominal == report.team.items_ordinal == 6
    assert (report.items, report.judgements) == (6, 54)


@pytest.mark.parametrize("batch, columns", [("b1", slice(0, 6)), ("b2", slice(6, 12))])
def test_batch_alpha_uses_the_batch_units_only(batch: str, columns: slice) -> None:
    nominal, ordinal = designed_matrices()
    figures = agreement(designed(), 0.6).batches[batch]
    assert figures.alpha_nominal == pytest.approx(team_alpha([row[columns] for row in nominal], "nominal"))
    assert figures.alpha_ordinal == pytest.approx(team_alpha([row[columns] for row in ordinal], "ordinal"))
    assert (figures.units_nominal, figures.items_nominal) == (6, 3)


def test_items_without_a_batch_go_under_none() -> None:
    items = [labels_item(0, TINY[0], batch=None), labels_item(1, TINY[1], batch="b1")]
    report = agreement(items, 0.6)
    assert sorted(report.batches) == ["(none)", "b1"]
    assert report.batches["(none)"].units_nominal == 1
    assert report.batches["(none)"].alpha_nominal is None  # one unit, one value: 0/0


def test_cohens_kappa_of_each_pair() -> None:
    # A and C over 12 units: agree on 10. A accepts 3 of 12, C accepts 3 of 12 (items 0, 1, 2).
    #   pe = (3/12)(3/12) + (9/12)(9/12) = 90/144;  kappa = (10/12 - 90/144) / (1 - 90/144) = 30/54 = 5/9.
    pairs = {(p.a, p.b): (p.kappa, p.units) for p in agreement(designed(), 0.6).pairs}
    assert pairs == {
        ("A", "B"): (1.0, 12), ("A", "C"): (pytest.approx(5 / 9), 12), ("B", "C"): (pytest.approx(5 / 9), 12)
    }


@pytest.mark.parametrize(
    "threshold, expected",
    [
        # 2 of 3 agrees on every unit: the consensus is A's and B's label; C matches 10 of 12.
        pytest.param(0.6, {"A": (1.0, 12), "B": (1.0, 12), "C": (10 / 12, 12)}, id="two-thirds-agree"),
        # Unanimity needed: the two flipped units have no consensus, and C matches all the rest.
        pytest.param(1.0, {"A": (1.0, 10), "B": (1.0, 10), "C": (1.0, 10)}, id="unanimity-needed"),
    ],
)
def test_agreement_with_consensus(threshold: float, expected: dict[str, tuple[float, int]]) -> None:
    report = agreement(designed(), threshold)
    got = {f.reviewer: (f.agreement_with_consensus, f.units) for f in report.reviewers}
    assert got == {r: (pytest.approx(share), units) for r, (share, units) in expected.items()}


def test_rank_positions_share_the_tie_group_rank() -> None:
    # [[2], [0, 1]] gives candidate 2 rank 1 and candidates 0, 1 rank 2; [[2], [0], [1]] gives 1, 2, 3.
    items = [item(0, [fb("A", "rank", ranking=[[2], [0, 1]]), fb("B", "rank", ranking=[[2], [0], [1]])], 3),
             item(1, [fb("A", "rank", ranking=[[0], [1], [2]]), fb("B", "rank", ranking=[[0], [1], [2]])], 3)]
    report = agreement(items, 0.6)
    expected = team_alpha([[2, 2, 1, 1, 2, 3], [2, 3, 1, 1, 2, 3]], "ordinal")
    assert report.team.alpha_ordinal == pytest.approx(expected)
    assert report.team.alpha_ordinal != pytest.approx(team_alpha([[2, 3, 1, 1, 2, 3], [2, 3, 1, 1, 2, 3]], "ordinal"))
    assert report.team.alpha_nominal is None and report.reviewers[0].agreement_with_consensus is None


def test_latest_judgement_of_each_reviewer_is_used() -> None:
    # B first rejects, then accepts: the pair agrees on both units (counting B's reject, it would not).
    items = [item(0, [fb("A", "accept"), fb("B", "reject"), fb("B", "accept")]), labels_item(1, {"A": "r", "B": "r"})]
    report = agreement(items, 0.6)
    assert report.team.alpha_nominal == pytest.approx(1.0)
    assert (report.pairs[0].kappa, report.pairs[0].units) == (pytest.approx(1.0), 2)
    assert report.judgements == 5


# ----- undefined figures are None, never a crash -----


@pytest.mark.filterwarnings("error")  # a 0/0 inside krippendorff would warn
@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no-items"),
        pytest.param([item(0, [])], id="item-without-judgements"),
        pytest.param([labels_item(n, {"A": "a"}) for n in range(3)], id="single-reviewer"),
        pytest.param([labels_item(n, {"A": "a", "B": "a"}) for n in range(3)], id="one-value-overall"),
        # Two values in the data, but the only pairable unit holds one of them.
        pytest.param([labels_item(0, {"A": "a", "B": "a"}), labels_item(1, {"A": "r"})], id="one-value-among-pairable"),
        pytest.param([item(0, [fb("A", "rank", ranking=[[0, 1]]), fb("B", "rank", ranking=[[0, 1]])], 2)],
                     id="all-tied-rankings"),
    ],
)
def test_undefined_alpha_is_none(items: list[ItemJudgements]) -> None:
    report = agreement(items, 0.6)
    assert report.team.alpha_nominal is None and report.team.alpha_ordinal is None
    assert all(f.alpha_nominal is None and f.alpha_ordinal is None for f in report.batches.values())
    assert all(p.kappa is None for p in report.pairs)
    json.dumps(report.model_dump(mode="json"))  # None, not nan: valid JSON


def test_figures_behind_an_undefined_alpha_are_still_counted() -> None:
    report = agreement([labels_item(0, {"A": "a", "B": "a"}), labels_item(1, {"A": "r"}), item(2, [])], 0.6)
    assert (report.team.units_nominal, report.team.items_nominal) == (1, 1)
    assert [(p.a, p.b, p.kappa, p.units) for p in report.pairs] == [("A", "B", None, 1)]
    assert {f.reviewer: (f.agreement_with_consensus, f.units) for f in report.reviewers} == {
        "A": (1.0, 2), "B": (1.0, 1)  # a lone label is its own consensus (k = 1 resolves)
    }
    assert (report.items, report.judgements) == (2, 3)


def test_reviewers_with_no_common_unit_have_no_pair() -> None:
    report = agreement([labels_item(0, {"A": "a", "B": "r"}), labels_item(1, {"C": "a"})], 0.6)
    assert [(p.a, p.b) for p in report.pairs] == [("A", "B")]
    assert [f.reviewer for f in report.reviewers] == ["A", "B", "C"]


def test_report_is_json_serialisable() -> None:
    dumped = agreement(designed(), 0.6).model_dump(mode="json")
    assert json.loads(json.dumps(dumped)) == dumped
    assert set(dumped) == {"team", "batches", "pairs", "reviewers", "items", "judgements"}


@pytest.mark.parametrize("threshold", [0.0, 1.01, -1.0])
def test_bad_threshold_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        agreement([], threshold)


def test_candidate_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="candidate index 1 is out of range"):
        agreement([item(0, [fb("A", "accept", 1)], candidates=1)], 0.6)
