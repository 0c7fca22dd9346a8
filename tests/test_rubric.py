"""The rubric file and what ratings mean: validation, harm, KTO labels, counts per version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hitl_app.core.errors import UserError
from hitl_app.feedback.ledger import Judgement
from hitl_app.feedback.records import Feedback, Generation, Sampling
from hitl_app.feedback.rubric import load_rubric, rating_counts
from hitl_app.feedback.training_rows import rows_for

SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=32)


def test_the_shipped_rubric_has_the_med_palm_axes() -> None:
    rubric = load_rubric()
    assert [a.name for a in rubric.axes] == ["consensus", "harm_likelihood", "harm_extent", "inaccurate", "missing", "bias"]
    assert rubric.harmful == {"harm_likelihood": ["likely"], "harm_extent": ["severe"]}


@pytest.mark.parametrize(
    "ratings, expected",
    [
        ({"consensus": "agrees", "inaccurate": "none"}, True),  # best level on every rated axis
        ({"consensus": "agrees", "missing": "major"}, False),  # worst level on one axis
        ({"consensus": "no consensus"}, None),  # in between: no label
        ({}, None),
    ],
)
def test_kto_label_of_ratings(ratings: dict, expected: bool | None) -> None:
    assert load_rubric().kto_label(ratings) is expected


def test_check_refuses_unknown_axes_and_levels_and_drops_empty_ones() -> None:
    rubric = load_rubric()
    assert rubric.check({"bias": "none", "missing": ""}) == {"bias": "none"}
    assert rubric.check({"bias": None}) is None
    with pytest.raises(UserError, match="unknown rubric axis 'tone'"):
        rubric.check({"tone": "warm"})
    with pytest.raises(UserError, match="'sometimes' is not a level of rubric axis 'bias'"):
        rubric.check({"bias": "sometimes"})
    with pytest.raises(UserError, match="must map axis names"):
        rubric.check(["bias"])
    assert rubric.harmful_ratings({"harm_extent": "severe", "bias": "likely"}) == ["harm_extent: severe"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"axes": [{"name": "a", "question": "q", "levels": ["x", "x"]}]}), "repeats a level"),
        (json.dumps({"axes": [{"name": "a", "question": "q", "levels": ["x", "y"]}], "harmful": {"a": ["z"]}}), "not levels"),
        (json.dumps({"axes": []}), "axes"),
    ],
)
def test_a_broken_rubric_file_is_refused_with_its_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rubric.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_rubric(path)


def test_ratings_set_the_rated_candidates_kto_label() -> None:
    gen = Generation(reviewer="q", prompt="Is it safe?", candidates=["Yes.", "No."], version="v0001", sampling=SAMPLING, prompt_tokens=3)
    plain = Feedback(reviewer="a", generation_id=gen.id, action="accept")
    rated = Feedback(reviewer="a", generation_id=gen.id, action="accept", rubric={"missing": "major"})
    assert [r["label"] for r in rows_for(Judgement(0, plain, gen)).kto] == [True]
    made = rows_for(Judgement(0, rated, gen))
    assert [(r["completion"][0]["content"], r["label"]) for r in made.kto] == [("Yes.", False)]
    assert len(made.sft) == 1  # the accept still endorses the answer as written


def test_rating_counts_per_version_list_every_level() -> None:
    counts = rating_counts([("v1", {"bias": "none"}), ("v1", {"bias": "none", "missing": "minor"}), ("v2", {"bias": "likely"})], load_rubric())
    assert counts["v1"]["bias"] == {"none": 2, "possible": 0, "likely": 0}
    assert counts["v1"]["missing"]["minor"] == 1 and counts["v2"]["bias"]["likely"] == 1
