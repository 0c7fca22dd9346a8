"""The reward model's comparison of a new version with the serving one, and the gate's length rule."""

from __future__ import annotations

import random

import pytest

from hitl_app.core.config import Settings
from hitl_app.evaluation.gate import decide
from hitl_app.evaluation.reward_eval import gained_by_length_only, reward_evaluation
from hitl_app.versions.manifest import EvalMetrics


def _evaluation(reward) -> EvalMetrics:
    return EvalMetrics(
        serving_version="base", heldout_pairs=0, heldout_edits=0, perplexity=10.0, serving_perplexity=10.0,
        kl_base=0.0, kl_serving=0.0, mean_answer_tokens=50.0, duration_s=1.0, reward=reward,
    )  # fmt: skip


def _lengths(seed: int, n: int = 24) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    serving = [rng.randint(30, 80) for _ in range(n)]
    return [t + rng.randint(20, 60) for t in serving], serving  # the new version writes longer answers


def test_a_reward_that_pays_for_length_is_caught_by_the_gate() -> None:
    rng = random.Random(1)
    new_tokens, serving_tokens = _lengths(0)
    pays_for_length = lambda tokens: 0.02 * tokens + rng.gauss(0, 0.05)  # noqa: E731
    r = reward_evaluation("v0001", [pays_for_length(t) for t in new_tokens], [pays_for_length(t) for t in serving_tokens],
                          new_tokens, serving_tokens)  # fmt: skip
    assert r.mean_reward > r.serving_mean_reward and r.win_rate > 0.9
    assert r.length_correlation > 0.9
    assert gained_by_length_only(r)
    gate = decide(_evaluation(r), Settings(_env_file=None).gate_config)
    assert not gate.passed
    assert [c.metric for c in gate.failures] == ["reward_length_adjusted_gain"]


def test_a_gain_length_does_not_explain_passes() -> None:
    rng = random.Random(2)
    new_tokens, serving_tokens = _lengths(3)
    new = [1.0 + rng.gauss(0, 0.1) for _ in new_tokens]  # better answers, whatever their length
    serving = [rng.gauss(0, 0.1) for _ in serving_tokens]
    r = reward_evaluation("v0001", new, serving, new_tokens, serving_tokens)
    assert r.win_rate == 1.0 and r.win_rate_low > 0.8
    assert not gained_by_length_only(r)
    assert decide(_evaluation(r), Settings(_env_file=None).gate_config).passed


def test_the_interval_holds_the_win_rate_and_bad_input_is_refused() -> None:
    r = reward_evaluation("v0002", [1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 0.5, 1.0], [10, 10, 10, 10], [10, 10, 10, 10])
    assert r.win_rate == pytest.approx((2 + 0.5) / 4)
    assert r.win_rate_low <= r.win_rate <= r.win_rate_high
    assert r.length_correlation is None and r.label == "learned proxy"
    assert reward_evaluation("v0002", [], [], [], []).prompts == 0
    with pytest.raises(ValueError, match="one score and one length"):
        reward_evaluation("v0002", [1.0], [], [1], [1])
