"""Benchmark ``reward``: the reward model on the embedded model, as a round trains and serving uses it.

- **Training:** a fresh reward adapter (``training.reward``, the app's default LoRA, epochs and
  learning rate) trained on ``reward_train_pairs`` pairs of the designed preference
  (``reward_pairs``: on a red-flag question, the answer that sends the patient to urgent care beats
  the same answer that does not), timed from attaching the adapter to the last step.
- **Held-out accuracy:** pairwise accuracy on ``reward_heldout_pairs`` pairs of the held-out split
  (new question templates, explanations and advice sentences), before and after training.
- **Scoring:** one ``score_completions`` call on 4 candidates, as the app scores an answer's
  candidates before they are shown: the trained adapter on a copy of the base in the serving
  dtype (``--serve-dtype auto``: bf16 on a CPU with native bf16); the median of
  ``reward_score_repeats`` calls.

- **RL stage:** ``training.rl.train_rl`` (TRL's GRPO) on a fresh policy LoRA, with the reward
  model just trained and the safety checks as rewards: ``rl_prompts`` shipped patient questions,
  ``rl_generations`` answers each of up to ``rl_max_new_tokens`` tokens (the app's defaults),
  timed from the call to its return, with its first and last mean reward and KL.

The pairs carry the app's default system prompt, as the clinicians' judgements do.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.chat import chat_prompt
from ..core.config import DEFAULT_SYSTEM_PROMPT, Settings
from .figures import fmt
from .plan import BenchConfig
from .reward_pairs import designed_pairs

log = logging.getLogger(__name__)

GOALS = {"train_s": 20.0, "score_s": 0.05, "heldout_accuracy": 0.9, "rl_s": 120.0}


def bench_reward(cfg: BenchConfig, base: Path, tokenizer) -> dict[str, Any]:
    """Benchmark ``reward`` (see the module docstring)."""
    from peft import PeftModel

    from ..evaluation.reward_model import chat_ids, load_reward_base, pairwise_accuracy, score_completions
    from ..serving.fastpath import resolve_serve_dtype
    from ..training.reward import attach_reward_adapter, train_reward
    from ..training.sft import TrainConfig

    settings = Settings(base_model=str(base))
    training = settings.training_config
    train_cfg = TrainConfig.from_config(training)
    train = designed_pairs(cfg.reward_train_pairs, seed=0, split="train", system_prompt=DEFAULT_SYSTEM_PROMPT)
    heldout = designed_pairs(cfg.reward_heldout_pairs, seed=1, split="heldout", system_prompt=DEFAULT_SYSTEM_PROMPT)

    started = time.perf_counter()
    reward_base = load_reward_base(str(base))
    load_s = time.perf_counter() - started
    model = attach_reward_adapter(reward_base, None, train_cfg)
    before = pairwise_accuracy(model, tokenizer, heldout)
    started = time.perf_counter()
    result = train_reward(
        model, tokenizer, train, train_cfg, epochs=training.reward_epochs, learning_rate=training.reward_learning_rate
    )
    train_s = time.perf_counter() - started
    after = pairwise_accuracy(model, tokenizer, heldout)

    serving = settings.serving_config
    dtype = resolve_serve_dtype(serving.serve_dtype, "cpu", False)
    with tempfile.TemporaryDirectory(prefix="hitl-bench-reward-") as saved:
        model.save_pretrained(saved)
        scorer = PeftModel.from_pretrained(load_reward_base(str(base), dtype=dtype), saved)
    pair = heldout[0]
    prompt = chat_prompt(pair["prompt"][-1]["content"], DEFAULT_SYSTEM_PROMPT)
    answers = [p[side][0]["content"] for p in heldout[:2] for side in ("chosen", "rejected")]
    tokens = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    prompt_tokens = len(chat_ids(tokenizer, prompt))
    score_completions(scorer, tokenizer, prompt, answers)  # warm-up
    times = []
    for _ in range(cfg.reward_score_repeats):
        started = time.perf_counter()
        score_completions(scorer, tokenizer, prompt, answers)
        times.append(time.perf_counter() - started)
    score_s = statistics.median(times)
    rl = _bench_rl(base, tokenizer, settings, train_cfg, model)
    log.info(
        "reward: trained on %d pairs in %s (%d steps), held-out accuracy %.2f -> %.2f on %d pairs; scoring 4 "
        "candidates %s", result.pairs, fmt(train_s, " s"), result.steps, before.accuracy, after.accuracy, after.n,
        fmt(score_s, " ms", 1e3, 1),
    )  # fmt: skip
    return {
        "load_s": load_s,
        "train_s": train_s,
        "pairs": result.pairs,
        "steps": result.steps,
        "epochs": training.reward_epochs,
        "learning_rate": training.reward_learning_rate,
        "batch_size": train_cfg.batch_size,
        "loss_first": result.loss_first,
        "loss_last": result.loss_last,
        "heldout_pairs": after.n,
        "heldout_accuracy_before": before.accuracy,
        "heldout_accuracy": after.accuracy,
        "heldout_margin": after.mean_margin,
        "score_s": score_s,
        "score_p_max_s": max(times),
        "score_candidates": len(answers),
        "score_mean_tokens": sum(tokens) / len(tokens),
        "score_prompt_tokens": prompt_tokens,
        "score_dtype": str(dtype or "float32"),
        "rl": rl,
        "goals": {
            "rl_within_120s": rl["duration_s"] <= GOALS["rl_s"],
            "train_within_20s": train_s <= GOALS["train_s"],
            "score_within_50ms": score_s <= GOALS["score_s"],
            "heldout_accuracy_at_least_0_9": after.accuracy >= GOALS["heldout_accuracy"],
        },
    }


def _bench_rl(base: Path, tokenizer, settings: Settings, train_cfg, reward_model) -> dict[str, Any]:
    """One RL stage as a ``--train-method rl`` round runs it, on a fresh policy LoRA."""
    from ..evaluation.evalsets import load_patient_questions
    from ..evaluation.reward_model import score_completions
    from ..safety.checker import SafetyChecker
    from ..serving.base_model import LoadOptions, load_base
    from ..training.rl import reward_model_reward, safety_reward, train_rl
    from ..training.sft import attach_adapter

    t = settings.training_config
    policy = attach_adapter(load_base(str(base), LoadOptions(device="cpu")), None, train_cfg)
    questions = [q.question for q in load_patient_questions()][: t.rl_prompts]
    result = train_rl(
        policy,
        tokenizer,
        [chat_prompt(q, DEFAULT_SYSTEM_PROMPT) for q in questions],
        [reward_model_reward(reward_model, tokenizer, score_completions), safety_reward(SafetyChecker())],
        train_cfg,
        generations=t.rl_generations,
        max_new_tokens=t.rl_max_new_tokens,
        beta=t.rl_beta,
        learning_rate=t.rl_learning_rate,
    )
    log.info("reward: RL stage of %d prompts x %d answers in %.1f s", result.prompts, result.generations, result.duration_s)
    return result.to_dict() | {"max_new_tokens": t.rl_max_new_tokens}
