"""The reward-model stage of a round: TRL's RewardTrainer on the round's preference pairs, on LoRA.

The reward model is the base loaded for sequence classification (``evaluation.reward_model.
load_reward_base``) with a LoRA adapter and a trained copy of its ``score`` head
(``modules_to_save``), both saved in the adapter folder. The loss (Bradley-Terry:
``-log sigmoid(r_chosen - r_rejected)``) and the accuracy are TRL's; nothing here computes one.

The base is meant to be kept between rounds: a round attaches an adapter (fresh, or continued from
the parent version's), trains, saves it and unloads it. PEFT 0.21's ``unload()`` puts the
*trained* copy of a ``modules_to_save`` head in place of the original, which would leave this
round's head in the kept base; the models ``attach_reward_adapter`` returns therefore unload with
``unload_reward_adapter``, which puts the original head back.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.preference_accuracy import _reply_text
from .sft import LOSS_FLOOR_MAX_WINDOW, ProgressFn, TrainConfig, _progress_callback, quiet

log = logging.getLogger(__name__)

# The head a sequence-classification model scores with; trained and saved with the adapter.
SCORE_HEAD = "score"


@dataclass
class RewardResult:
    """What the reward-model stage reports.

    Args:
        pairs: pairs trained on (those that fit ``max_seq_length``; TRL drops longer ones).
        steps: optimiser steps.
        duration_s: seconds of the stage (TRL's tokenisation and training).
        loss_first: mean logged training loss of the first pass's steps (at most 16), each taken on
            its batch before that step's update; with a single pass, of its first quarter.
        loss_last: the same of the last pass's steps (of a single pass: its last quarter).
        train_accuracy: TRL's logged accuracy (chosen scored above rejected) of the steps
            ``loss_last`` covers; None if TRL logged none.
        dropped_too_long: pairs TRL left out for being longer than ``max_seq_length``.
    """

    pairs: int
    steps: int
    duration_s: float
    loss_first: float
    loss_last: float
    train_accuracy: float | None
    dropped_too_long: int = 0


def reward_lora_config(cfg: TrainConfig):
    """The peft ``LoraConfig`` of a fresh reward adapter: the round's LoRA settings on a
    sequence classifier, with the score head trained in full and saved with the adapter."""
    return cfg.lora_config(task_type="SEQ_CLS", modules_to_save=[SCORE_HEAD])


def unload_reward_adapter(model):
    """The base under a reward ``PeftModel``, with its LoRA layers removed and its original heads.

    PEFT's own ``unload`` returns the trained copy of each ``modules_to_save`` module in place of
    the original; this puts the originals back, so the base scores as it did before the adapter
    was attached and the next round's adapter starts from the untrained head.
    """
    from peft.utils import ModulesToSaveWrapper

    inner = model.get_base_model()
    originals = {name: m.original_module for name, m in inner.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    base = model.base_model.unload()  # what PeftModel.unload() runs (it forwards to its tuner)
    for name, module in originals.items():
        module.requires_grad_(True)  # PEFT froze it when it wrapped it; a fresh load's head is trainable
        base.set_submodule(name, module)
    return base


def attach_reward_adapter(model, previous: Path | None, cfg: TrainConfig):
    """Wrap a reward base (``load_reward_base``) with a trainable LoRA adapter and score head.

    Args:
        model: a one-label sequence-classification model without adapters.
        previous: a folder written by ``save_pretrained`` of such a wrapped model (an earlier
            round's reward adapter) to continue from, or None for a fresh adapter
            (``reward_lora_config(cfg)``) on the base's untrained head.
        cfg: the round's LoRA settings (used for a fresh adapter only: a continued one keeps its own).

    Returns:
        A ``PeftModel`` whose ``unload()`` gives back the base with its original head
        (``unload_reward_adapter``).

    Raises:
        ValueError: ``model`` is not a one-label classifier.
    """
    import torch
    from peft import PeftModel, get_peft_model

    if getattr(model.config, "num_labels", None) != 1 or not hasattr(model, SCORE_HEAD):
        raise ValueError("a reward adapter goes on a one-label sequence classifier (see load_reward_base)")
    if previous is not None:
        wrapped = PeftModel.from_pretrained(model, str(previous), is_trainable=True)
    else:
        # LoRA's A matrices are drawn from torch's global generator: seed a private fork of it, so a
        # fresh reward adapter is the same whatever ran before in the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            wrapped = get_peft_model(model, reward_lora_config(cfg))
    # PeftModel forwards unload() to its tuner through __getattr__, so an attribute on the instance
    # takes its place (see the module docstring for why the caller's unload must restore the head).
    wrapped.unload = types.MethodType(unload_reward_adapter, wrapped)
    return wrapped


def _as_row(pair: dict) -> dict:
    """A conversational row TRL accepts: the prompt, and chosen/rejected as one assistant message each."""
    return {
        "prompt": pair["prompt"],
        "chosen": [{"role": "assistant", "content": _reply_text(pair["chosen"])}],
        "rejected": [{"role": "assistant", "content": _reply_text(pair["rejected"])}],
    }


def _check_pairs(pairs: list[dict]) -> None:
    if not pairs:
        raise ValueError("no preference pairs to train the reward model on")
    problems = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair.get("prompt"), list):
            problems.append(f"pair {i}: 'prompt' must be a list of chat messages")
        for key in ("chosen", "rejected"):
            if _reply_text(pair.get(key)) is None:
                problems.append(f"pair {i}: {key!r} must be one assistant message or a string")
    if problems:
        raise ValueError("malformed preference pairs for the reward model:\n" + "\n".join(problems))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def train_reward(
    model,
    tokenizer,
    pairs: list[dict],
    cfg: TrainConfig,
    *,
    epochs: float,
    learning_rate: float,
    progress: ProgressFn | None = None,
    callbacks: list | None = None,
) -> RewardResult:
    """Train the reward adapter of ``model`` in place with TRL's RewardTrainer. Nothing is saved.

    One shuffled (seeded) pass of ``epochs`` over the pairs at a constant ``learning_rate``, with
    the round's batch size, LoRA and maximum length; no evaluation pass inside TRL (the caller
    measures held-out pairs with ``evaluation.reward_model.pairwise_accuracy``). TRL disables
    dropout in the model, so a pair scores the same in training as in evaluation.

    Args:
        model: a reward ``PeftModel`` (see ``attach_reward_adapter``).
        tokenizer: its tokenizer, with a chat template; TRL sets its pad token to the eos token if
            it has none, and the model's ``config.pad_token_id`` to match.
        pairs: DPO rows ``{"prompt": [messages], "chosen": [assistant msg], "rejected": [...]}``
            (a plain string is accepted for chosen/rejected).
        cfg: the round's settings (batch size, maximum length, seed, device).
        epochs: passes over the pairs (a fraction is allowed).
        learning_rate: the constant learning rate.
        progress: called with (fraction done, message) after every step.
        callbacks: more ``TrainerCallback``s (e.g. the trainer's thread count before every step).

    Raises:
        ValueError: no pairs, a malformed pair, ``epochs`` or ``learning_rate`` not positive, or
            no pair short enough for ``cfg.max_seq_length``.
        FloatingPointError: TRL logged a non-finite loss.
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    _check_pairs(pairs)
    if epochs <= 0 or learning_rate <= 0:
        raise ValueError(f"the reward model needs epochs and learning_rate > 0 (got {epochs}, {learning_rate})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hitl-reward-") as scratch:
        args = RewardConfig(
            **cfg.trainer_args(scratch, cfg.batch_size),
            num_train_epochs=epochs,
            learning_rate=learning_rate,
        )
        stage_callbacks = [_progress_callback(progress, "reward model")] if progress else []
        stage_callbacks += list(callbacks or [])
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list([_as_row(p) for p in pairs]),
            processing_class=tokenizer,
            callbacks=stage_callbacks or None,
        )
        quiet(trainer)
        kept = len(trainer.train_dataset)
        if kept == 0:
            raise ValueError(
                f"every one of the {len(pairs)} pairs is longer than max_seq_length ({cfg.max_seq_length} tokens)"
            )
        output = trainer.train()
        steps = trainer.state.global_step
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    losses = [float(entry["loss"]) for entry in logs]
    if not losses or not all(math.isfinite(x) for x in losses) or not math.isfinite(output.training_loss):
        raise FloatingPointError(f"the reward model's training produced a non-finite loss ({losses})")
    # The first and the last pass over the distinct pairs, in steps (at most LOSS_FLOOR_MAX_WINDOW),
    # so both figures are over the same pairs; with a single pass they would be the same steps, so
    # then its first and last quarter.
    per_pass = math.ceil(kept / cfg.batch_size)
    window = max(1, min(LOSS_FLOOR_MAX_WINDOW, per_pass if len(losses) >= 2 * per_pass else len(losses) // 4))
    accuracies = [float(entry["accuracy"]) for entry in logs[-window:] if "accuracy" in entry]
    result = RewardResult(
        pairs=kept,
        steps=steps,
        duration_s=round(time.perf_counter() - started, 2),
        loss_first=_mean(losses[:window]),
        loss_last=_mean(losses[-window:]),
        train_accuracy=_mean(accuracies) if accuracies else None,
        dropped_too_long=len(pairs) - kept,
    )
    log.info(
        "reward model: %d pairs (%d too long), %d steps, loss %.4f -> %.4f, train accuracy %s, %.1fs",
        result.pairs, result.dropped_too_long, steps, result.loss_first, result.loss_last,
        "-" if result.train_accuracy is None else f"{result.train_accuracy:.2f}", result.duration_s,
    )  # fmt: skip
    return result
