"""The SFT stage of a training round: TRL's SFTTrainer on LoRA, continuing from the parent adapter.

The stage knows nothing of the app: it takes rows and a config, reports progress through a
callback, and writes an adapter folder. Losses come from TRL; nothing here computes one by hand.
``TrainConfig`` is the LoRA and optimiser settings that this stage and the preference stage share.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..core.config import LORA_TARGETS, TrainingConfig, resolve_device

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
# The loss floor is checked on the mean of the last pass over the distinct rows, at most this many steps.
LOSS_FLOOR_MAX_WINDOW = 16


@dataclass(frozen=True)
class TrainConfig:
    """LoRA and optimisation settings of a round's stages (recorded in every manifest).

    Its fields are named as the manifests store them: ``batch_size`` is ``--train-batch-size``,
    and ``device`` is ``--device`` resolved to ``cpu`` or ``cuda``.
    """

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    learning_rate: float = 5e-4
    num_epochs: float = 3.0  # over the round's new SFT rows; replayed rows are seen once
    preference_epochs: float = 1.0
    preference_learning_rate: float = 5e-5
    sft_loss_floor: float = 1.0  # nats per token; 0: no early stop
    batch_size: int = 1
    max_seq_length: int = 1024
    seed: int = 0
    device: str = "cpu"

    @property
    def activation_checkpointing(self) -> bool:
        """Recompute activations in backward: on CUDA, where memory bounds larger bases; not on
        CPU, where a LoRA on a small base fits and the recomputation would only slow the stage."""
        return self.device == "cuda"

    @classmethod
    def from_config(cls, config: TrainingConfig) -> "TrainConfig":
        """The stages' settings from the training section of the app's settings (``settings.training_config``)."""
        return cls(
            lora_r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            lora_target_modules=list(config.lora_target_modules),
            learning_rate=config.learning_rate,
            num_epochs=config.num_epochs,
            preference_epochs=config.preference_epochs,
            preference_learning_rate=config.preference_learning_rate,
            sft_loss_floor=config.sft_loss_floor,
            batch_size=config.train_batch_size,
            max_seq_length=config.max_seq_length,
            seed=config.seed,
            device=resolve_device(config.device),
        )

    def to_dict(self) -> dict:
        """A JSON-ready copy for manifests."""
        return asdict(self)

    def trainer_args(self, scratch: str, batch_size: int) -> dict:
        """The TRL arguments every stage shares: one optimiser step per batch at a constant rate,
        no checkpoints, no reports, no progress bars (progress goes to the status file)."""
        return dict(
            output_dir=scratch,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size,
            gradient_accumulation_steps=1,
            lr_scheduler_type="constant",
            max_length=self.max_seq_length,
            # TRL turns checkpointing on by default; see activation_checkpointing.
            activation_checkpointing=self.activation_checkpointing,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=self.seed,
            use_cpu=self.device == "cpu",
            bf16=self.device == "cuda",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )

    def lora_config(self, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        """The peft ``LoraConfig`` for a fresh adapter: the policy's (a causal LM), or with
        ``task_type="SEQ_CLS"`` and its head in ``modules_to_save``, a reward model's."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
            task_type=task_type,
            modules_to_save=modules_to_save,
        )


@dataclass
class SFTResult:
    """What the SFT stage reports.

    ``losses_from`` says where the losses come from: ``evaluation`` (a pass over the distinct rows
    before and after training) or ``training steps`` (the mean logged loss of the first and of the
    last pass's steps, each taken on its row before that step's update).
    """

    loss_before: float
    loss_after: float
    steps: int
    duration_s: float
    losses_from: str = "evaluation"


def _progress_callback(progress: ProgressFn, stage: str):
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps:
                progress(state.global_step / state.max_steps, f"{stage}: step {state.global_step}/{state.max_steps}")

    return _Progress()


def quiet(trainer):
    """``trainer`` without the callback that prints every step's log dict to the console.

    The stage logs one line with its figures when it is done; the per-step figures stay in
    ``trainer.state.log_history``.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _loss_floor_callback(floor: float, window: int):
    """Stop training once the mean loss of the last ``window`` steps is at most ``floor``."""
    from transformers import TrainerCallback

    class _LossFloor(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            # Logged once a step (logging_steps=1), after the step; the loop checks the flag next.
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                recent = self.losses[-window:]
                if len(recent) == window and sum(recent) / window <= floor:
                    control.should_training_stop = True

    return _LossFloor()


def attach_adapter(base_model, parent_adapter: Path | None, cfg: TrainConfig):
    """Wrap ``base_model`` with a trainable LoRA adapter: the parent's if given, else a fresh one."""
    from peft import PeftModel, get_peft_model

    from transformers import set_seed

    if parent_adapter is not None:
        return PeftModel.from_pretrained(base_model, str(parent_adapter), is_trainable=True)
    set_seed(cfg.seed)  # a fresh adapter starts from the same weights in every process and every run
    return get_peft_model(base_model, cfg.lora_config())


def epoch_schedule(rows: list[dict], replay: list[dict], epochs: float, seed: int) -> list[dict]:
    """The rows of one pass of SFT: ``rows`` ``epochs`` times over, ``replay`` once, shuffled (seeded).

    A fractional part of ``epochs`` adds that share of ``rows`` once more, chosen by the seed. New
    rows are what the round teaches, so they are seen several times; replayed rows were already
    learned, and seeing each once keeps them in place without learning them by heart.

    Raises:
        ValueError: ``epochs`` is not positive.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive (got {epochs})")
    rng = random.Random(seed)
    whole, part = divmod(epochs, 1.0)
    schedule = list(rows) * int(whole) + rng.sample(rows, round(part * len(rows))) + list(replay)
    rng.shuffle(schedule)
    return schedule


def train_sft(
    model,
    tokenizer,
    rows: list[dict],
    cfg: TrainConfig,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
    replay: list[dict] | None = None,
    *,
    eval_losses: bool = True,
    callbacks: list | None = None,
) -> SFTResult:
    """Train the LoRA adapter of ``model`` (a PeftModel) on SFT rows, and save it to ``out_dir`` if given.

    The new ``rows`` are trained ``cfg.num_epochs`` times over and the ``replay`` rows once, in one
    shuffled pass (``epoch_schedule``), at a constant learning rate.

    Args:
        model: a ``PeftModel`` with a trainable adapter (see ``attach_adapter``).
        tokenizer: its tokenizer, with a chat template.
        rows: conversational prompt-completion rows; the loss is on the completion only.
        cfg: the round's settings.
        out_dir: where the adapter is saved (``adapter_model.safetensors`` + config); None: not saved
            (a later stage of the round trains on and saves it).
        progress: called with (fraction done, message) after every step.
        replay: rows of earlier rounds, seen once.
        eval_losses: measure the loss before and after training with an evaluation pass over the
            distinct rows each; without, both come from the training steps' logged losses (the
            first pass's and the last pass's steps), which costs nothing more.
        callbacks: more ``TrainerCallback``s (e.g. the trainer's thread count before every step).

    Raises:
        ValueError: ``rows`` and ``replay`` are both empty.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    replay = replay or []
    if not rows and not replay:
        raise ValueError("no SFT rows to train on")
    started = time.perf_counter()
    schedule = epoch_schedule(rows, replay, cfg.num_epochs, cfg.seed) if rows else list(replay)
    with tempfile.TemporaryDirectory(prefix="hitl-sft-") as scratch:
        args = SFTConfig(
            **cfg.trainer_args(scratch, cfg.batch_size),
            num_train_epochs=1,
            learning_rate=cfg.learning_rate,
            completion_only_loss=True,
        )
        stage_callbacks = [_progress_callback(progress, "SFT")] if progress else []
        stage_callbacks += list(callbacks or [])
        # One pass over the distinct rows, in steps (at most LOSS_FLOOR_MAX_WINDOW).
        window = max(1, min(LOSS_FLOOR_MAX_WINDOW, math.ceil(len(rows + replay) / cfg.batch_size)))
        if cfg.sft_loss_floor > 0:
            stage_callbacks.append(_loss_floor_callback(cfg.sft_loss_floor, window))
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(schedule),
            eval_dataset=Dataset.from_list(rows + replay) if eval_losses else None,
            processing_class=tokenizer,
            callbacks=stage_callbacks,
        )
        quiet(trainer)
        if eval_losses:
            loss_before = trainer.evaluate()["eval_loss"]
            trainer.train()
            loss_after = trainer.evaluate()["eval_loss"]
        else:
            trainer.train()
            losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
            loss_before = sum(losses[:window]) / len(losses[:window]) if losses else math.nan
            loss_after = sum(losses[-window:]) / len(losses[-window:]) if losses else math.nan
        steps = trainer.state.global_step
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
    result = SFTResult(
        loss_before=float(loss_before),
        loss_after=float(loss_after),
        steps=steps,
        duration_s=time.perf_counter() - started,
        losses_from="evaluation" if eval_losses else "training steps",
    )
    if not (math.isfinite(result.loss_before) and math.isfinite(result.loss_after)):
        raise FloatingPointError(f"SFT produced a non-finite loss ({result.loss_before} -> {result.loss_after})")
    log.info("SFT: %d rows (+%d replayed), %d steps, loss %.4f -> %.4f", len(rows), len(replay), steps, result.loss_before, result.loss_after)
    return result
