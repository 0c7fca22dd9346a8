"""ranking: parsing, checking and formatting a clinician's order of candidates; the schema's rank action.

Pure functions and pydantic records: no store or model is involved.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from hitl_app.core.errors import UserError
from hitl_app.feedback.ranking import format_order, parse_order, ranks_to_order
from hitl_app.feedback.records import RECORD_ADAPTER, Feedback

# ----- parse_order: what it accepts -----


@pytest.mark.parametrize(
    "order, n, expected",
    [
        pytest.param([2, 0, 1], 3, [[2], [0], [1]], id="flat-list"),
        pytest.param([1, 0], 2, [[1], [0]], id="two"),
        pytest.param([0, 1], 2, [[0], [1]], id="two-identity"),
        pytest.param([2, [0, 1]], 3, [[2], [0, 1]], id="nested-tie"),
        pytest.param([[2], [0, 1]], 3, [[2], [0, 1]], id="all-groups"),
        pytest.param([[1, 0], 2], 3, [[1, 0], [2]], id="tie-first-order-kept"),
        pytest.param([[0, 1, 2]], 3, [[0, 1, 2]], id="all-tied"),
        pytest.param([2, [0, 1], 3], 4, [[2], [0, 1], [3]], id="docstring-example"),
        pytest.param("2 > 0 = 1", 3, [[2], [0, 1]], id="string"),
        pytest.param("2>0=1", 3, [[2], [0, 1]], id="string-no-spaces"),
        pytest.param("  2 >0=  1 ", 3, [[2], [0, 1]], id="string-odd-spaces"),
        pytest.param("2 > 0 = 1 > 3", 4, [[2], [0, 1], [3]], id="string-docstring-example"),
        pytest.param("1 > 0", 2, [[1], [0]], id="string-two"),
        pytest.param("0 = 1 = 2", 3, [[0, 1, 2]], id="string-all-tied"),
        pytest.param("2\t>\n1 > 0", 3, [[2], [1], [0]], id="string-tabs-newlines"),
        pytest.param("10 > " + " > ".join(map(str, range(10))), 11, [[10]] + [[i] for i in range(10)], id="multi-digit"),
        pytest.param("none", 3, [], id="none"),
        pytest.param(" NONE ", 3, [], id="none-any-case"),
        pytest.param("None", 2, [], id="none-capitalised"),
        pytest.param("", 3, [], id="empty-string"),
        pytest.param("   ", 3, [], id="blank-string"),
        pytest.param([], 3, [], id="empty-list"),
    ],
)
def test_parse_order(order: list | str, n: int, expected: list[list[int]]) -> None:
    assert parse_order(order, n) == expected


def test_parse_order_copies_its_input() -> None:
    tie = [0, 1]
    order = [2, tie]
    parsed = parse_order(order, 3)
    tie.append(99)
    assert parsed == [[2], [0, 1]]
    assert order == [2, tie]  # and leaves it alone


# ----- parse_order: what it refuses, and why -----


@pytest.mark.parametrize(
    "order, n, message",
    [
        # a duplicate index
        pytest.param([0, 0, 1], 3, "candidate 0 appears more than once in the ranking", id="duplicate"),
        pytest.param([[0, 1], 1], 3, "candidate 1 appears more than once in the ranking", id="duplicate-across-groups"),
        pytest.param([[2, 2], 0, 1], 3, "candidate 2 appears more than once in the ranking", id="duplicate-within-tie"),
        pytest.param("0 > 0 = 1", 3, "candidate 0 appears more than once in the ranking", id="duplicate-string"),
        # an index out of range
        pytest.param([0, 3, 1], 3, "candidate index 3 is out of range: this generation has candidates 0..2", id="too-high"),
        pytest.param([-1, 0, 1], 3, "candidate index -1 is out of range: this generation has candidates 0..2", id="negative"),
        pytest.param("0 > 5", 2, "candidate index 5 is out of range: this generation has candidates 0..1", id="too-high-string"),
        # not every candidate named
        pytest.param([0], 3, "the ranking names 1 of 3 candidates; missing: 1, 2", id="one-of-three"),
        pytest.param("2 > 0", 3, "the ranking names 2 of 3 candidates; missing: 1", id="missing-string"),
        pytest.param([[0, 2]], 4, "the ranking names 2 of 4 candidates; missing: 1, 3", id="missing-tied"),
        pytest.param([3, 1], 4, "the ranking names 2 of 4 candidates; missing: 0, 2", id="missing-first"),
        # a single-candidate generation has nothing to rank, not even "none"
        pytest.param([0], 1, "this generation has a single candidate; there is nothing to rank", id="single"),
        pytest.param("0", 1, "this generation has a single candidate", id="single-string"),
        pytest.param("none", 1, "this generation has a single candidate", id="single-none"),
        pytest.param([], 1, "this generation has a single candidate", id="single-empty"),
        pytest.param([0], 0, "this generation has a single candidate", id="no-candidates"),
        # malformed strings
        pytest.param("2 >> 0", 3, "cannot read the ranking '2 >> 0'", id="double-operator"),
        pytest.param("2 > 0 =", 3, "cannot read the ranking '2 > 0 ='", id="trailing-operator"),
        pytest.param("> 1 > 0", 2, "cannot read the ranking '> 1 > 0'", id="leading-operator"),
        pytest.param("1 < 0", 2, "cannot read the ranking '1 < 0'", id="less-than"),
        pytest.param("1, 0", 2, "cannot read the ranking '1, 0'", id="commas"),
        pytest.param("1 0", 2, "cannot read the ranking '1 0'", id="no-operator"),
        pytest.param("b > a", 2, "cannot read the ranking 'b > a'", id="letters"),
        pytest.param("1 > -0", 2, "cannot read the ranking '1 > -0'", id="sign"),
        pytest.param("1.0 > 0", 2, "cannot read the ranking '1.0 > 0'", id="decimal"),
        pytest.param("nothing", 2, "cannot read the ranking 'nothing'", id="not-none"),
        pytest.param("2 > 0 = 1", 3, None, id="valid-control"),
        # odd entries inside a list
        pytest.param([True, 0], 2, "cannot read ranking entry True", id="bool"),
        pytest.param([[False, 1]], 2, "cannot read ranking entry [False, 1]", id="bool-in-tie"),
        pytest.param([1.0, 0], 2, "cannot read ranking entry 1.0", id="float"),
        pytest.param([[0, 1.0]], 2, "cannot read ranking entry [0, 1.0]", id="float-in-tie"),
        pytest.param(["1", "0"], 2, "cannot read ranking entry '1'", id="strings"),
        pytest.param([1, "0"], 2, "cannot read ranking entry '0'", id="string-after-index"),
        pytest.param([None, 0], 2, "cannot read ranking entry None", id="none-entry"),
        pytest.param([[], 0, 1], 2, "cannot read ranking entry []", id="empty-tie-group"),
        pytest.param([[[0]], 1], 2, "cannot read ranking entry [[0]]", id="nested-too-deep"),
        pytest.param([(0, 1)], 2, "cannot read ranking entry (0, 1)", id="tuple-entry"),
        # not a list at all
        pytest.param((1, 0), 2, "a ranking is a list of candidate indices, not tuple", id="tuple"),
        pytest.param(1, 2, "a ranking is a list of candidate indices, not int", id="int"),
        pytest.param(None, 2, "a ranking is a list of candidate indices, not NoneType", id="none"),
        pytest.param({0: 1}, 2, "a ranking is a list of candidate indices, not dict", id="dict"),
    ],
)
def test_parse_order_refuses(order: object, n: int, message: str | None) -> None:
    if message is None:  # the control case shows the table's shape can pass
        assert parse_order(order, n)  # type: ignore[arg-type]
        return
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        parse_order(order, n)  # type: ignore[arg-type]
    assert caught.type is UserError  # a user's mistake, not a missing object or a permission


# ----- format_order and ranks_to_order -----


@pytest.mark.parametrize(
    "ranking, n, text",
    [
        pytest.param([[2], [0, 1]], 3, "2 > 0 = 1", id="tie"),
        pytest.param([[2], [0], [1]], 3, "2 > 0 > 1", id="strict"),
        pytest.param([[1], [0]], 2, "1 > 0", id="two"),
        pytest.param([[0, 1, 2]], 3, "0 = 1 = 2", id="all-tied"),
        pytest.param([[1, 0], [2]], 3, "1 = 0 > 2", id="tie-order-kept"),
        pytest.param([[2], [0, 1], [3]], 4, "2 > 0 = 1 > 3", id="four"),
        pytest.param([[10], [3, 0]] + [[i] for i in (1, 2, 4, 5, 6, 7, 8, 9)], 11, "10 > 3 = 0 > 1 > 2 > 4 > 5 > 6 > 7 > 8 > 9", id="multi-digit"),
        pytest.param([], 3, "none", id="all-unacceptable"),
    ],
)
def test_format_order_round_trips_parse_order(ranking: list[list[int]], n: int, text: str) -> None:
    assert format_order(ranking) == text
    assert parse_order(text, n) == ranking
    assert parse_order(format_order(ranking), n) == ranking
    assert format_order(parse_order(text.replace(" ", ""), n)) == text


@pytest.mark.parametrize(
    "ranks, expected",
    [
        pytest.param([2, 1, 2], [[1], [0, 2]], id="tie-second"),
        pytest.param([1, 2, 3], [[0], [1], [2]], id="in-order"),
        pytest.param([3, 2, 1], [[2], [1], [0]], id="reversed"),
        pytest.param([1, 1, 1], [[0, 1, 2]], id="all-tied"),
        pytest.param([1, 5, 5, 2], [[0], [3], [1, 2]], id="gaps"),
        pytest.param([2.0, 1.0], [[1], [0]], id="floats-from-the-ui"),
        pytest.param([10, 9], [[1], [0]], id="numeric-not-text-order"),
    ],
)
def test_ranks_to_order(ranks: list, expected: list[list[int]]) -> None:
    order = ranks_to_order(ranks)
    assert order == expected
    assert all(type(i) is int for group in order for i in group)
    assert parse_order(order, len(ranks)) == expected  # always a complete ranking


# ----- the schema's rank action -----


def feedback(**fields) -> Feedback:
    return Feedback(reviewer="dr-b", generation_id="g1", **fields)


@pytest.mark.parametrize(
    "ranking, all_unacceptable",
    [
        pytest.param([[2], [0, 1]], False, id="tie"),
        pytest.param([[1], [0]], False, id="strict"),
        pytest.param([[0, 1]], False, id="all-tied"),
        pytest.param([], True, id="all-unacceptable"),
    ],
)
def test_feedback_rank_validates(ranking: list[list[int]], all_unacceptable: bool) -> None:
    fb = feedback(action="rank", ranking=ranking)
    assert fb.ranking == ranking
    assert fb.all_unacceptable is all_unacceptable
    # It survives the store's JSON round trip unchanged.
    again = RECORD_ADAPTER.validate_json(fb.model_dump_json())
    assert again == fb and again.ranking == ranking


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"action": "accept"}, id="accept"),
        pytest.param({"action": "edit", "text": "Better."}, id="edit"),
        pytest.param({"action": "reject", "reason": "Unsafe."}, id="reject"),
    ],
)
def test_other_actions_are_never_all_unacceptable(fields: dict) -> None:
    fb = feedback(**fields)
    assert fb.ranking is None
    assert fb.all_unacceptable is False


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param({"action": "rank"}, "a ranking goes with actions 'rank' and 'vote'", id="rank-without-ranking"),
        pytest.param({"action": "rank", "ranking": None}, "a ranking goes with actions 'rank' and 'vote'", id="rank-ranking-none"),
        pytest.param({"action": "accept", "ranking": [[1], [0]]}, "a ranking goes with actions 'rank' and 'vote'", id="accept-with-ranking"),
        pytest.param({"action": "accept", "ranking": []}, "a ranking goes with actions 'rank' and 'vote'", id="accept-with-empty-ranking"),
        pytest.param(
            {"action": "reject", "reason": "Unsafe.", "ranking": [[0], [1]]}, "a ranking goes with actions 'rank' and 'vote'", id="reject-with-ranking"
        ),
        pytest.param({"action": "edit", "text": "Better.", "ranking": [[0]]}, "a ranking goes with actions 'rank' and 'vote'", id="edit-with-ranking"),
        pytest.param({"action": "rank", "ranking": [[0], [0]]}, "names each candidate once", id="duplicate"),
        pytest.param({"action": "rank", "ranking": [[0, 1], [1]]}, "names each candidate once", id="duplicate-across-groups"),
        pytest.param({"action": "rank", "ranking": [[0, 0]]}, "names each candidate once", id="duplicate-within-tie"),
        pytest.param({"action": "rank", "ranking": [[]]}, "non-empty tie groups", id="empty-group"),
        pytest.param({"action": "rank", "ranking": [[1], [], [0]]}, "non-empty tie groups", id="empty-group-inside"),
        pytest.param({"action": "rank", "ranking": [[-1], [0]]}, "greater than or equal to 0", id="negative-index"),
        pytest.param({"action": "rank", "ranking": [[1], [0]], "text": "x"}, "'rank' takes no edited text", id="rank-with-text"),
    ],
)
def test_feedback_rank_refuses(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        feedback(**fields)
