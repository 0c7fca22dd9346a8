"""A new version against the serving one, as a reward model scores their answers to the same questions.

Pure figures from scores and lengths: the mean reward of each version, the new version's win rate
with its percentile-bootstrap interval, and how much of the difference length explains. The gate
reads the last (``gate._reward_length``): a version whose reward rose only because its answers got
longer is held back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..versions.manifest import RewardEvalMetrics
from .win_rate import bootstrap_ci

# A gain is "only length" when, with length's effect taken out, less than this share of it is left.
LENGTH_ONLY_SHARE = 0.1


def reward_evaluation(
    reward_version: str,
    new_scores: Sequence[float],
    serving_scores: Sequence[float],
    new_tokens: Sequence[int],
    serving_tokens: Sequence[int],
    seed: int = 0,
) -> RewardEvalMetrics:
    """The reward model's comparison of two versions' answers to the same questions, in order.

    Args:
        reward_version: the version whose reward model gave the scores.
        new_scores, serving_scores: each question's answer score, new and serving version.
        new_tokens, serving_tokens: each answer's length in tokens.
        seed: the bootstrap's seed.

    Raises:
        ValueError: the four sequences differ in length.
    """
    n = len(new_scores)
    if not n == len(serving_scores) == len(new_tokens) == len(serving_tokens):
        raise ValueError("one score and one length per question and version are needed")
    if n == 0:
        return RewardEvalMetrics(reward_version=reward_version, prompts=0)
    new, old = np.asarray(new_scores, float), np.asarray(serving_scores, float)
    new_len, old_len = np.asarray(new_tokens, float), np.asarray(serving_tokens, float)
    outcomes = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(new, old)]
    ci = bootstrap_ci(outcomes, seed=seed)
    rewards, lengths = np.concatenate([new, old]), np.concatenate([new_len, old_len])
    correlation = slope = None
    if lengths.std() > 0 and rewards.std() > 0:
        correlation = float(np.corrcoef(rewards, lengths)[0, 1])
        slope = float(np.polyfit(lengths, rewards, 1)[0])  # reward per token, both versions pooled
    gain = float(np.mean(new - old))
    adjusted = gain - (slope or 0.0) * float(np.mean(new_len - old_len))
    return RewardEvalMetrics(
        reward_version=reward_version,
        prompts=n,
        mean_reward=float(new.mean()),
        serving_mean_reward=float(old.mean()),
        win_rate=ci.estimate,
        win_rate_low=ci.low,
        win_rate_high=ci.high,
        mean_tokens=float(new_len.mean()),
        serving_mean_tokens=float(old_len.mean()),
        length_correlation=correlation,
        length_adjusted_gain=adjusted,
    )


def gained_by_length_only(r: RewardEvalMetrics) -> bool:
    """Whether the new version's reward rose only because its answers got longer: its mean reward is
    above the serving version's and its answers are longer, but with length's pooled effect taken
    out less than ``LENGTH_ONLY_SHARE`` of the gain is left."""
    if None in (r.mean_reward, r.serving_mean_reward, r.mean_tokens, r.serving_mean_tokens, r.length_adjusted_gain):
        return False
    gain = r.mean_reward - r.serving_mean_reward
    return gain > 0 and r.mean_tokens > r.serving_mean_tokens and r.length_adjusted_gain < LENGTH_ONLY_SHARE * gain
