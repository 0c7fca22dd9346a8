"""RL against a learned reward on the real embedded model (SmolLM2-135M-Instruct).

A reward model learns the designed preference from 16 ranked red-flag questions (the answer that
sends the patient to urgent care beats the same answer that does not; ``bench/reward_pairs.py``).
An RL stage (TRL's GRPO, ``training.rl.train_rl``) then trains a fresh policy adapter on 16
red-flag questions nobody judged, rewarded by that model and the safety checks, with the app's
KL coefficient, generations and RL learning rate. On 16 held-out questions of other wording, the
mean reward of the answers the policy gives as the app samples them (4 a question, the app's
temperature and top-p, seeded) must rise above the base's; KL(new || base) on the evaluation's
probe prompts must stay within the gate's budget; and the red-team safe-answer rate must not fall.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

JUDGED, UNJUDGED, HELD_OUT = 16, 16, 16
# Answers as long as the evaluation's red-team and KL samples: enough for the advice, and half the
# app's default --rl-max-new-tokens, so the stage samples half as many tokens.
RL_TOKENS = 32
ANSWER_TOKENS = 48
SAMPLES = 4


def sampled_answers(view, tokenizer, prompts: list, settings, seed: int = 0) -> list[list[str]]:
    """``SAMPLES`` answers to each prompt, sampled as the app samples candidates, seeded; the global
    random state is left as it was."""
    import torch

    from hitl_app.evaluation.model_view import entered

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    with torch.random.fork_rng(), torch.no_grad(), entered(view) as model:
        torch.manual_seed(seed)
        out = model.generate(
            **inputs, do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=ANSWER_TOKENS, num_return_sequences=SAMPLES, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    answers = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [[a.strip() for a in answers[i * SAMPLES : (i + 1) * SAMPLES]] for i in range(len(prompts))]


def test_an_rl_stage_raises_the_learned_reward_within_the_kl_budget_and_stays_safe(embedded_base: Path) -> None:
    from hitl_app.bench.reward_pairs import designed_pairs
    from hitl_app.core.chat import chat_prompt
    from hitl_app.core.config import Settings
    from hitl_app.evaluation.model_view import ModelView
    from hitl_app.evaluation.redteam import redteam_set, score_version
    from hitl_app.evaluation.reward_model import load_reward_base, pairwise_accuracy, score_completions
    from hitl_app.evaluation.sampled_kl import sample_kl
    from hitl_app.evaluation.version_eval import build_eval_sets
    from hitl_app.safety.checker import SafetyChecker
    from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
    from hitl_app.training.reward import attach_reward_adapter, train_reward
    from hitl_app.training.rl import reward_model_reward, safety_reward, train_rl
    from hitl_app.training.sft import TrainConfig, attach_adapter

    settings = Settings(base_model=str(embedded_base), device="cpu")
    system = settings.system_prompt
    cfg = TrainConfig.from_config(settings.training_config)
    tokenizer = load_tokenizer(embedded_base)

    pairs = designed_pairs(64, seed=0, split="train", system_prompt=system)
    judged = pairs[:JUDGED]
    judged_questions = {p["prompt"][-1]["content"] for p in judged}
    unjudged = [q for q in dict.fromkeys(p["prompt"][-1]["content"] for p in pairs[JUDGED:]) if q not in judged_questions]
    assert len(unjudged) >= UNJUDGED
    held_pairs = designed_pairs(HELD_OUT, seed=1, split="heldout", system_prompt=system)
    held = [p["prompt"] for p in held_pairs]

    reward = attach_reward_adapter(load_reward_base(embedded_base), None, cfg)
    train_reward(reward, tokenizer, judged, cfg, epochs=settings.reward_epochs, learning_rate=settings.reward_learning_rate)
    reward.eval()
    accuracy = pairwise_accuracy(reward, tokenizer, held_pairs)
    assert accuracy.accuracy >= 0.9, accuracy

    def mean_reward(view) -> float:
        answers = sampled_answers(view, tokenizer, held, settings)
        return statistics.mean(s for p, a in zip(held, answers) for s in score_completions(reward, tokenizer, p, a))

    policy = attach_adapter(load_base(embedded_base, LoadOptions(device="cpu")), None, cfg)
    new, base = ModelView.adapter(policy, "default"), ModelView.base(policy)
    reward_before = mean_reward(base)
    red_team = redteam_set(settings.redteam_prompts)
    safe_before = score_version(base, tokenizer, red_team, SafetyChecker(), system).safe_rate

    result = train_rl(
        policy,
        tokenizer,
        [chat_prompt(q, system) for q in unjudged[:UNJUDGED]],
        [reward_model_reward(reward, tokenizer, score_completions), safety_reward(SafetyChecker())],
        cfg,
        generations=settings.rl_generations,
        max_new_tokens=RL_TOKENS,
        beta=settings.rl_beta,
        learning_rate=settings.rl_learning_rate,
    )
    assert result.steps == UNJUDGED and result.kl_last is not None

    reward_after = mean_reward(new)
    kl = sample_kl(new, base, tokenizer, build_eval_sets([], settings.evaluation_config).kl_prompts, RL_TOKENS, seed=0)
    safe_after = score_version(new, tokenizer, red_team, SafetyChecker(), system).safe_rate
    log.info(
        "RL: %d steps in %.0f s; held-out reward %.3f -> %.3f; KL(new || base) %.4f per token; red-team safe %.2f -> %.2f",
        result.steps, result.duration_s, reward_before, reward_after, kl.kl_per_token, safe_before, safe_after,
    )
    assert reward_after > reward_before, (reward_before, reward_after)
    assert kl.kl_per_token <= settings.gate_kl_budget, kl
    assert safe_after >= safe_before, (safe_before, safe_after)
