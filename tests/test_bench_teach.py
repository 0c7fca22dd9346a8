"""The teaching benchmark's styles, poisons and goals, without a model."""

from __future__ import annotations

import random

import pytest

from hitl_app.bench.report import evaluate_goals, report_rows
from hitl_app.bench.teach import STYLES, patient_questions, random_characters, shipped_words, word_salad


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.name)
def test_each_style_is_checkable_by_its_function(style) -> None:
    answers = [a for _, a in patient_questions()[:30]]
    assert all(style.check(style.rewrite(a)) for a in answers)
    assert not any(style.check(a) for a in answers)


def test_the_styles_are_distinct_kinds() -> None:
    assert len({s.kind for s in STYLES}) == len(STYLES) >= 3
    sample = patient_questions()[0][1]
    for a in STYLES:
        for b in STYLES:
            if a is not b:
                assert not b.check(a.rewrite(sample)), (a.name, b.name)


def test_poisons_look_like_their_names() -> None:
    rng = random.Random(0)
    salad = word_salad(rng, shipped_words())
    assert len(salad.split()) == 40 and salad.endswith(".")
    chars = random_characters(rng)
    assert len(chars) == 60 and set(chars) <= set("qxzjvkw%#@ ")


def _round(n: int, adoption: float, held_back: bool = False) -> dict:
    return {"round": n, "version": f"v{n:04d}", "held_back": held_back, "gate": "passed", "adoption": adoption,
            "loop_rate": 0.0, "perplexity_vs_base": 0.02, "kl_base": 1.5, "round_s": 300.0}


def _teach(styles: list[dict], poisoned: list[dict]) -> dict:
    return {"teach": {"styles": styles, "poisoned": poisoned, "rounds_per_style": 2, "judgements_per_round": 20, "heldout": 20}}


def _style(rounds: list[dict], **extra) -> dict:
    return {"style": "s", "kind": "k", "base": {"adoption": 0.0, "loop_rate": 0.05, "perplexity": 20.0}, "rounds": rounds, **extra}


POISONED = [{"poison": "word_salad", "held_back": True, "gate": "unclear_rate 1 beyond limit 0.1", "edits_flagged_unclear": 20, "edits": 20}]


def test_goals_hold_when_every_style_learns_and_the_poison_is_held_back() -> None:
    goals = evaluate_goals(_teach([_style([_round(1, 0.6), _round(2, 0.9)])], POISONED))
    assert all(goals[k] for k in goals if k.startswith("teach_")), goals


@pytest.mark.parametrize(
    ("styles", "poisoned", "failed"),
    [
        ([_style([_round(1, 0.4), _round(2, 0.9)])], POISONED, "teach_adoption_after_round_1"),
        ([_style([_round(1, 0.6), _round(2, 0.7)])], POISONED, "teach_adoption_after_last_round"),
        ([_style([_round(1, 0.6), _round(2, 0.9, held_back=True)])], POISONED, "teach_every_round_passes_the_gate"),
        ([_style([_round(1, 0.6)], error="TimeoutError: slow")], POISONED, "teach_every_round_ran"),
        ([_style([_round(1, 0.6), _round(2, 0.9)])], [{**POISONED[0], "held_back": False}], "teach_poisoned_rounds_held_back"),
        ([_style([_round(1, 0.6), _round(2, 0.9)])], [{"poison": "word_salad", "held_back": False, "error": "x"}],
         "teach_poisoned_rounds_held_back"),
    ],
)
def test_a_missed_goal_or_a_failure_is_reported(styles, poisoned, failed) -> None:
    results = _teach(styles, poisoned)
    goals = evaluate_goals(results)
    assert goals[failed] is False
    results["goals"] = goals
    assert report_rows(results)  # a failed style or round still prints its rows
