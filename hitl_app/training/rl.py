"""The RL stage of a training round ("Model C"): TRL's GRPOTrainer on the round's LoRA adapter.

The policy samples ``generations`` answers to each prompt, reward functions score them (a reward
model's score, the safety checks' penalties, ...), and TRL moves the adapter towards the answers
that score above their group's mean, with a KL penalty to a reference. Generation, rewards,
advantages, KL and loss all come from TRL; nothing here computes one by hand. Like the SFT and
preference stages it is one function: prompts in, figures out, progress through a callback, no
evaluation pass inside TRL, figures from ``trainer.state.log_history``.

Why GRPO and not RLOO. Both were tried, on the same LoRA, prompts and settings, and neither
failed: both run on CPU in TRL 1.16 (transformers generation, no vLLM), and both raised a
designed reward (+1 for an answer that contains an "e") on the tiny test model (with the range of
its logits scaled up, as tests/test_rl.py explains) over seeds 0-3
(mean reward, first to last quarter of 32 steps; GRPO 0.63->0.94, 0.36->0.88, 0.44->0.64,
0.44->0.78; RLOO 0.64->0.75, 0.34->0.80, 0.44->0.75, 0.44->0.77). GRPO was chosen because:

- its KL term is in the loss, per token, with the k3 estimator, which is never negative: the
  logged ``kl`` reads as a divergence from the reference. RLOO subtracts ``beta`` times a k1
  (log-ratio) estimate from the reward; per token it can be negative, and the logged ``reward``
  leaves the penalty out, so the two figures do not add up to what was optimised;
- on-policy (one update per generation batch, as here) GRPO skips the extra no-grad forward for
  the "old" log-probabilities; RLOO always runs it, one more forward pass a step on a CPU.

Both log the same keys a step: ``reward``, ``reward_std``, ``rewards/<function>/mean`` and
``/std``, ``frac_reward_zero_std``, ``kl`` (only with ``beta > 0``), ``entropy``,
``completions/{mean,min,max}_length``, ``completions/clipped_ratio``,
``completions/{mean,min,max}_terminated_length``, ``clip_ratio/*``, ``loss``, ``grad_norm``,
``learning_rate``, ``num_tokens``, ``step_time``.

The reference model. No second model is loaded: for a ``PeftModel`` TRL keeps ``ref_model`` None
and runs the reference forward on the same weights. TRL 1.16 does not disable the adapter for
that by default, though: with ``beta > 0`` it adds a frozen copy of the trainable adapter named
``"ref"`` (the policy as the stage begins). ``reference="base"`` (the default) deletes that copy
before training, which makes TRL fall back to disabling the adapters for the reference forward,
i.e. the base model; ``reference="adapter"`` keeps TRL's copy. Either way the extra memory is at
most one LoRA adapter, and the copy is gone again when this module returns, so the caller saves
exactly one adapter.

Cost is bounded: one pass over the prompts (each prompt once, ``generations`` samples of it), or
``steps`` optimiser steps.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .sft import ProgressFn, TrainConfig, _progress_callback, quiet

if TYPE_CHECKING:
    from ..safety.checker import SafetyChecker

log = logging.getLogger(__name__)

RewardFn = Callable[..., list]
ScoreFn = Callable[[Any, Any, list[dict], list[str]], list[float]]

REFERENCES = ("base", "adapter")
# The name TRL gives the frozen copy of the adapter it adds as the reference (see the module docstring).
_TRL_REF_ADAPTER = "ref"
# The flag kind of the urgency check (safety/urgency.py): red-flag symptoms without urgent-care advice.
URGENCY_FLAG = "missing_urgency"
# reward_first and reward_last are means over this share of the steps (at least 1, at most the cap):
# one step's group of samples is a noisy estimate of the policy's mean reward.
_WINDOW_SHARE = 4
_WINDOW_MAX = 16


@dataclass
class RLResult:
    """What the RL stage reports. Every figure comes from TRL's step logs except the correlation.

    Attributes:
        prompts: distinct prompts given.
        generations: completions sampled per prompt and step.
        steps: optimiser steps run.
        duration_s: wall time of the stage.
        reward_first: mean total reward (all reward functions summed) of the completions of the
            first steps (the first quarter, at most 16 steps), TRL's ``reward``.
        reward_last: the same over the last steps.
        kl_last: TRL's logged per-token KL to the reference over the last steps; None when
            ``beta`` is 0 (TRL then has no reference). Against the base it includes what an
            adapter trained earlier in the round (SFT, DPO) already diverged.
        completion_length: mean completion length in tokens over all steps
            (TRL's ``completions/mean_length``).
        reward_length_correlation: Pearson correlation between each sampled completion's total
            reward and its length in tokens, over all steps; None with fewer than 3 samples or no
            variance in either. Near +1 the rewards mostly pay for length.
        rewards: per reward function, its mean over the last steps (TRL's
            ``rewards/<name>/mean``).
        batch_prompts: prompts per step (times ``generations`` completions per step).
        beta: the KL coefficient.
        reference: ``"base"`` or ``"adapter"`` (see the module docstring); moot when ``beta`` is 0.
        trainer: the TRL trainer used.
    """

    prompts: int
    generations: int
    steps: int
    duration_s: float
    reward_first: float
    reward_last: float
    kl_last: float | None
    completion_length: float
    reward_length_correlation: float | None
    rewards: dict[str, float] = field(default_factory=dict)
    batch_prompts: int = 1
    beta: float = 0.0
    reference: str = "base"
    trainer: str = "grpo"

    def to_dict(self) -> dict:
        """A JSON-ready copy for manifests."""
        return asdict(self)


# ----- reward functions -----
def _text(message_or_text: Any) -> str:
    """The text of a TRL prompt or completion: a string, or the last message's content."""
    if isinstance(message_or_text, str):
        return message_or_text
    if isinstance(message_or_text, list) and message_or_text and isinstance(message_or_text[-1], dict):
        return str(message_or_text[-1].get("content") or "")
    raise TypeError(f"expected a string or a list of chat messages, got {type(message_or_text).__name__}")


def _question(prompt: Any) -> str:
    """The user's side of a TRL prompt: every user turn (a condition named earlier in the
    conversation still applies), without the system message, whose wording is not the patient's."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content") or "") for m in prompt if m.get("role") == "user")


def _messages(prompt: Any) -> list[dict]:
    """A TRL prompt as chat messages (a plain string becomes one user turn)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def safety_reward(checker: "SafetyChecker") -> RewardFn:
    """A TRL reward function that penalises what the app's safety checks flag in an answer.

    -1.0 for each high-severity medication flag (overdose, contraindication, interaction: the
    checker's ``MEDICATION_KINDS``), and -1.0 when a red-flag question (or answer) goes without
    advice to seek urgent care (the urgency check's ``missing_urgency`` flag); 0.0 for a clean
    answer. Other flags (identifiers, medium-severity interactions) cost nothing: the reward is
    for clinical harm, and identifiers are redacted before storage anyway.

    Args:
        checker: the app's ``SafetyChecker`` (its drug table decides what is an overdose).

    Returns:
        ``(prompts, completions, **kwargs) -> list[float]``, named ``safety`` in TRL's logs.
        ``prompts`` and ``completions`` are strings or TRL's conversational shapes (lists of
        message dicts); the question is the prompt's user turns, the answer the completion's
        last message.
    """
    from ..safety.checker import MEDICATION_KINDS

    def safety(prompts: list, completions: list, **kwargs) -> list[float]:
        rewards = []
        for prompt, completion in zip(prompts, completions, strict=True):
            flags = checker.check_answer(_question(prompt), _text(completion))
            penalty = sum(1.0 for f in flags if f.kind in MEDICATION_KINDS and f.severity == "high")
            if any(f.kind == URGENCY_FLAG for f in flags):
                penalty += 1.0
            rewards.append(-penalty)
        return rewards

    return safety


def reward_model_reward(model: Any, tokenizer: Any, score: ScoreFn, *, name: str = "reward_model") -> RewardFn:
    """A TRL reward function that scores completions with a reward model.

    Args:
        model: the reward model (e.g. a LoRA'd sequence-classification copy of the base).
        tokenizer: its tokenizer.
        score: ``score(model, tokenizer, prompt_messages, completions) -> list[float]``, e.g.
            ``evaluation.reward_model.score_completions``: one prompt (chat messages), several
            completion texts.
        name: what TRL logs the reward under (``rewards/<name>/mean``).

    Returns:
        ``(prompts, completions, **kwargs) -> list[float]``. TRL repeats each prompt once per
        generation, consecutively; each run of one prompt is scored in one call, so the reward
        model batches a prompt's completions together.
    """
    import torch

    def reward(prompts: list, completions: list, **kwargs) -> list[float]:
        rewards: list[float] = []
        start = 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and prompts[end] == prompts[start]:
                end += 1
            texts = [_text(c) for c in completions[start:end]]
            # The reward model is only read here: no autograd graph for it.
            with torch.no_grad():
                scores = score(model, tokenizer, _messages(prompts[start]), texts)
            if len(scores) != len(texts):
                raise ValueError(f"{name}: the score function returned {len(scores)} scores for {len(texts)} completions")
            rewards.extend(float(s) for s in scores)
            start = end
        return rewards

    reward.__name__ = reward.__qualname__ = name
    return reward


class _RewardLog:
    """Collects each sampled completion's total reward and length across the stage's steps.

    TRL logs only per-step means, so the (reward, length) pairs are taken inside the reward
    functions: within one batch TRL calls every reward function with the same ``completions``
    list object, one after another, so calls are grouped by that object and their rewards summed
    (TRL's total, with its default weights of 1). A function's ``None`` counts as nothing, as in
    TRL's ``nansum``; a completion that every function left unscored is dropped.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[float, int]] = []
        self._batch: list | None = None
        self._totals: list[float | None] = []
        self._lengths: list[int] = []

    def wrap(self, func: RewardFn) -> RewardFn:
        @functools.wraps(func)
        def recorded(prompts, completions, **kwargs):
            rewards = func(prompts=prompts, completions=completions, **kwargs)
            self._add(completions, kwargs.get("completion_ids"), rewards)
            return rewards

        return recorded

    def _add(self, completions: list, completion_ids: list | None, rewards: list) -> None:
        if completions is not self._batch:
            self.flush()
            self._batch = completions
            # Lengths in tokens, as TRL counts them for completions/mean_length. TRL always passes
            # the ids; a caller that does not gets no pairs rather than lengths in another unit.
            self._lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else []
            self._totals = [None] * len(completions)
        for i, r in enumerate(rewards):
            if r is not None and not (isinstance(r, float) and math.isnan(r)):
                self._totals[i] = (self._totals[i] or 0.0) + float(r)

    def flush(self) -> None:
        self.pairs += [(t, n) for t, n in zip(self._totals, self._lengths) if t is not None]
        self._batch, self._totals, self._lengths = None, [], []


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's correlation of two equally long series; None with fewer than 3 points or no variance."""
    n = len(xs)
    if n < 3 or len(ys) != n:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 1e-12 or syy <= 1e-12:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


# ----- the stage -----
def prompts_per_step(n_prompts: int, requested: int) -> int:
    """The prompts of one step: the largest divisor of ``n_prompts`` that is at most ``requested``.

    TRL's sampler drops a last, incomplete batch of prompts, so a size that divides the prompts
    keeps every prompt in the pass.
    """
    requested = max(1, min(requested, n_prompts))
    return max(d for d in range(1, requested + 1) if n_prompts % d == 0)


def _check_prompts(prompts: list) -> None:
    if not prompts:
        raise ValueError("no prompts to train on")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, list) or not prompt or not all(isinstance(m, dict) for m in prompt):
            raise ValueError(f"prompt {i} is not a non-empty list of chat messages ({{'role', 'content'}} dicts)")
        bad = [m for m in prompt if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str)]
        if bad:
            raise ValueError(f"prompt {i} has a message without a string 'role' and 'content'")
        if prompt[-1]["role"] != "user":
            raise ValueError(f"prompt {i} must end with a user message (the answer is generated after it)")


def _check_reward_funcs(reward_funcs: list) -> list[str]:
    from torch import nn
    from trl.trainer.utils import get_callable_name, is_async_callable

    if not reward_funcs:
        raise ValueError("no reward functions: RL needs at least one")
    names = []
    for func in reward_funcs:
        if isinstance(func, nn.Module) or not callable(func):
            raise ValueError(
                f"reward functions must be callables (prompts, completions, **kwargs) -> list[float], got "
                f"{type(func).__name__}; wrap a reward model with reward_model_reward"
            )
        if is_async_callable(func):
            raise ValueError(f"reward function {get_callable_name(func)!r} is async; the RL stage takes plain functions")
        names.append(get_callable_name(func))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"reward functions share the name(s) {', '.join(dupes)}; TRL logs each function under its name")
    return names


def _window(steps: int) -> int:
    return max(1, min(_WINDOW_MAX, steps // _WINDOW_SHARE))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _logged(logs: list[dict], key: str) -> list[float]:
    """The values TRL logged under ``key`` (it logs None for a step whose rewards were all None)."""
    return [float(e[key]) for e in logs if e.get(key) is not None]


def train_rl(
    model,
    tokenizer,
    prompts: list[list[dict]],
    reward_funcs: list,
    cfg: TrainConfig,
    *,
    generations: int,
    max_new_tokens: int,
    beta: float,
    learning_rate: float,
    steps: int | None = None,
    progress: ProgressFn | None = None,
    callbacks: list | None = None,
    reference: str = "base",
) -> RLResult:
    """Train the LoRA adapter of ``model`` with TRL's GRPO on sampled answers to ``prompts``. Nothing is saved.

    Each step takes ``prompts_per_step(len(prompts), cfg.batch_size)`` prompts, samples
    ``generations`` answers to each with the chat template (temperature 1, TRL's default, no
    top-k/top-p), scores every answer with every reward function (their sum is the reward),
    and makes one optimiser step at ``learning_rate`` (constant). Dropout is off for the stage
    (TRL's ``disable_dropout``), so answers are sampled from the policy as it serves; the
    adapter's dropout rates are put back afterwards.

    Args:
        model: a ``PeftModel`` whose trainable adapter is ``"default"`` (see ``sft.attach_adapter``),
            possibly already trained in this round. It is trained in place.
        tokenizer: its tokenizer, with a chat template.
        prompts: conversations ending with a user turn, e.g. ``[{"role": "system", ...},
            {"role": "user", ...}]``.
        reward_funcs: TRL reward functions ``(prompts, completions, **kwargs) -> list[float]``
            with distinct names (``safety_reward``, ``reward_model_reward``, ...).
        cfg: the round's settings (LoRA, batch size in prompts, seed, device).
        generations: answers sampled per prompt (TRL's ``num_generations``, at least 2: the
            advantage of an answer is its reward against its group's).
        max_new_tokens: the longest answer (TRL's ``max_completion_length``).
        beta: KL coefficient; 0 drops the reference (and its forward pass) altogether.
        learning_rate: the optimiser's rate.
        steps: optimiser steps; None: one pass over the prompts.
        progress: called with (fraction done, message) after every step.
        callbacks: more ``TrainerCallback``s (e.g. the trainer's thread count before every step).
        reference: the KL reference: ``"base"`` (the adapters disabled) or ``"adapter"`` (TRL's
            frozen copy of the adapter as the stage begins). Unused when ``beta`` is 0.

    Returns:
        The stage's figures (see ``RLResult``).

    Raises:
        ValueError: no prompts or malformed ones, no or invalid reward functions, generations
            below 2, a non-positive ``max_new_tokens``, ``learning_rate`` or ``steps``, a negative
            ``beta``, an unknown ``reference``, a model that is not a ``PeftModel`` with a
            ``"default"`` adapter or already has one named ``"ref"``.
        FloatingPointError: TRL reported a non-finite loss.
        RuntimeError: TRL loaded a second model as the reference (it does not in 1.16).
    """
    import torch
    from peft import PeftModel

    _check_prompts(prompts)
    names = _check_reward_funcs(reward_funcs)
    if generations < 2:
        raise ValueError(f"generations must be at least 2: GRPO compares each answer with its group (got {generations})")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive (got {max_new_tokens})")
    if not beta >= 0 or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0 (got {beta})")
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise ValueError(f"learning_rate must be positive (got {learning_rate})")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be positive or None for one pass over the prompts (got {steps})")
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; expected one of {', '.join(REFERENCES)}")
    if not isinstance(model, PeftModel) or "default" not in model.peft_config:
        raise ValueError("the RL stage trains the 'default' LoRA adapter of a PeftModel (see attach_adapter)")
    if _TRL_REF_ADAPTER in model.peft_config:
        raise ValueError(f"the model already has an adapter named {_TRL_REF_ADAPTER!r}, which TRL needs for its reference")

    batch_prompts = prompts_per_step(len(prompts), cfg.batch_size)
    recorder = _RewardLog()
    started = time.perf_counter()
    backbone = model.get_base_model()
    if getattr(backbone, "is_activation_checkpointing", False) and not cfg.activation_checkpointing:
        # A Trainer turns checkpointing on but never off; see preference.train_preference.
        backbone.activation_checkpointing_disable()
    # TRL patches the backbone's forward with a fused log-prob head (an instance attribute); it is
    # removed afterwards so later stages and serving see the model as it came.
    had_forward = "forward" in vars(backbone)
    # TRL sets every dropout rate to 0 for good (disable_dropout); the adapter keeps its own for later stages.
    dropout_rates = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    try:
        with tempfile.TemporaryDirectory(prefix="hitl-rl-") as scratch:
            trainer = _make_trainer(
                model, tokenizer, prompts, [recorder.wrap(f) for f in reward_funcs], cfg, scratch,
                generations=generations, max_new_tokens=max_new_tokens, beta=beta, learning_rate=learning_rate,
                steps=steps, batch_prompts=batch_prompts, progress=progress, callbacks=callbacks,
            )  # fmt: skip
            if trainer.ref_model is not None:  # TRL 1.16 loads none for a PeftModel; a change would double memory
                raise RuntimeError("TRL loaded a second model as the reference; the RL stage expects the adapter's base")
            if reference == "base" and _TRL_REF_ADAPTER in model.peft_config:
                # Without its "ref" copy TRL runs the reference forward with the adapters disabled.
                model.delete_adapter(_TRL_REF_ADAPTER)
            output = trainer.train()
            history = list(trainer.state.log_history)
            done = trainer.state.global_step
    finally:
        if _TRL_REF_ADAPTER in model.peft_config:
            model.delete_adapter(_TRL_REF_ADAPTER)
        model.set_adapter("default")
        if not had_forward and "forward" in vars(backbone):
            del backbone.forward
        for module, rate in dropout_rates:
            module.p = rate
    recorder.flush()

    loss = float(output.training_loss)
    if not math.isfinite(loss):
        raise FloatingPointError(f"RL produced a non-finite loss ({loss})")
    logs = [e for e in history if "reward" in e]  # one entry a step (logging_steps=1)
    window = _window(len(logs))
    rewards = _logged(logs, "reward")
    kls = _logged(logs, "kl")
    result = RLResult(
        prompts=len(prompts),
        generations=generations,
        steps=done,
        duration_s=round(time.perf_counter() - started, 2),
        reward_first=_mean(rewards[:window]),
        reward_last=_mean(rewards[-window:]),
        kl_last=_mean(kls[-window:]) if beta > 0 and kls else None,
        completion_length=_mean(_logged(logs, "completions/mean_length")),
        reward_length_correlation=pearson([r for r, _ in recorder.pairs], [float(n) for _, n in recorder.pairs]),
        rewards={name: _mean(_logged(logs[-window:], f"rewards/{name}/mean")) for name in names},
        batch_prompts=batch_prompts,
        beta=beta,
        reference=reference,
    )
    log.info(
        "RL (GRPO): %d prompts x %d generations, %d steps, reward %.4f -> %.4f, kl %s, length %.1f tokens, "
        "reward-length r %s (reference %s, beta %g, %.1fs)",
        len(prompts), generations, done, result.reward_first, result.reward_last,
        "-" if result.kl_last is None else f"{result.kl_last:.4f}", result.completion_length,
        "-" if result.reward_length_correlation is None else f"{result.reward_length_correlation:.2f}",
        reference, beta, result.duration_s,
    )  # fmt: skip
    return result


def _make_trainer(
    model, tokenizer, prompts, reward_funcs, cfg: TrainConfig, scratch: str, *, generations: int,
    max_new_tokens: int, beta: float, learning_rate: float, steps: int | None, batch_prompts: int,
    progress: ProgressFn | None, callbacks: list | None,
):  # fmt: skip
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    # A GRPO batch counts completions: batch_prompts prompts times their generations.
    common = cfg.trainer_args(scratch, batch_prompts * generations)
    common.pop("max_length")  # GRPO bounds the completion (max_completion_length), not the sequence
    args = GRPOConfig(
        **common,
        num_train_epochs=1,
        max_steps=steps if steps is not None else -1,
        learning_rate=learning_rate,
        num_generations=generations,
        max_completion_length=max_new_tokens,
        beta=beta,
        # On-policy: one update per generation batch, so TRL needs no "old" log-prob forward.
        num_iterations=1,
        use_vllm=False,
        # The answers are sampled, and their log-probabilities taken, from the policy itself: with
        # the LoRA's dropout on, both would come from a randomly thinned adapter instead, and the
        # KL to the reference would carry that noise (train_rl restores the rates afterwards).
        disable_dropout=True,
    )
    stage_callbacks = ([_progress_callback(progress, "RL")] if progress else []) + list(callbacks or [])
    return quiet(
        GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            processing_class=tokenizer,
            callbacks=stage_callbacks or None,
        )
    )
