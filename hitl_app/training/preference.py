"""The preference stage of a training round: TRL's DPOTrainer (pairs) or KTOTrainer (labels) on LoRA.

It runs after SFT, on the same ``PeftModel``, and trains the same adapter further. Losses,
rewards and the KL estimate all come from TRL; nothing here computes one by hand.

The reference model. ``ref_model`` is left ``None`` and no second model is loaded. Given a
``PeftModel`` and no reference, TRL 1.16 adds a second, frozen LoRA adapter named ``"ref"`` that is
a copy of the trainable adapter as the stage begins, and runs the reference forward with that
adapter active. So by default the reference is the policy at the start of the stage (the parent
version plus this round's SFT): the textbook DPO set-up, where the reference is the SFT model.
``reference="base"`` instead removes TRL's copy before training, which makes TRL fall back to
disabling the adapters for the reference forward, i.e. the base model. Either way the extra
memory is at most one LoRA adapter, and TRL's copy is removed again before this module returns,
so the caller saves exactly one adapter.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time

from ..versions.manifest import PreferenceMetrics
from .sft import ProgressFn, TrainConfig, _progress_callback, quiet

log = logging.getLogger(__name__)

METHODS = ("auto", "sft", "dpo", "kto", "rl")  # rl: no DPO/KTO stage; the round's RL stage instead (round.py)
REFERENCES = ("adapter", "base")
# TRL's KTO estimates its KL term from mismatched (prompt, completion) pairs inside a batch and
# refuses a batch size of 1, so a KTO stage needs two labelled rows at least.
MIN_KTO_ROWS = 2
# The name TRL gives the frozen copy of the adapter it uses as the reference.
_TRL_REF_ADAPTER = "ref"
_ROW_KEYS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}


def choose_method(requested: str, n_pairs: int, n_labels: int) -> str | None:
    """The preference method a round runs after SFT, or None for no preference stage.

    ``auto`` is DPO when there are pairs, else KTO when there are labels; ``dpo`` and ``kto`` run
    only on their own kind of row; ``sft`` and ``rl`` never run one (``rl`` runs its own stage). KTO counts as possible only with at
    least ``MIN_KTO_ROWS`` labels: TRL cannot estimate KTO's KL term from a single row.

    Raises:
        ValueError: ``requested`` is not one of ``METHODS``.
    """
    if requested not in METHODS:
        raise ValueError(f"unknown training method {requested!r}; expected one of {', '.join(METHODS)}")
    can_dpo = n_pairs > 0
    can_kto = n_labels >= MIN_KTO_ROWS
    if requested == "auto":
        return "dpo" if can_dpo else ("kto" if can_kto else None)
    if requested == "dpo":
        return "dpo" if can_dpo else None
    if requested == "kto":
        return "kto" if can_kto else None
    return None


def kto_batch_size(n_rows: int, requested: int) -> int:
    """The batch size a KTO stage uses: the size nearest ``requested`` that is at least 2 and leaves
    no batch with a single row (the smaller size wins a tie).

    TRL builds each row's KL completion by rotating the completions within its batch, so a row
    alone in its batch is paired with itself and its "KL" is just its own log-ratio; TRL refuses
    batch size 1 for that reason. ``n_rows`` itself always qualifies, so there is always a size.

    Raises:
        ValueError: fewer than ``MIN_KTO_ROWS`` rows.
    """
    if n_rows < MIN_KTO_ROWS:
        raise ValueError(f"KTO needs at least {MIN_KTO_ROWS} labelled rows to estimate its KL term (got {n_rows})")
    sizes = [s for s in range(2, n_rows + 1) if n_rows % s != 1]
    return min(sizes, key=lambda s: (abs(s - requested), s))


def _check_rows(method: str, rows: list[dict]) -> None:
    if not rows:
        raise ValueError(f"no {method.upper()} rows to train on")
    keys = _ROW_KEYS[method]
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{method.upper()} row {i} lacks {', '.join(missing)} (expected keys {', '.join(keys)})")


def _finite(metrics: dict) -> dict[str, float]:
    """The numeric, finite entries of a metrics dict, as floats."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def train_preference(
    model,
    tokenizer,
    method: str,
    rows: list[dict],
    cfg: TrainConfig,
    beta: float,
    progress: ProgressFn | None = None,
    *,
    eval_before: bool = False,
    eval_after: bool = True,
    reference: str = "adapter",
    callbacks: list | None = None,
) -> PreferenceMetrics:
    """Train the LoRA adapter of ``model`` further with TRL's DPO or KTO trainer. Nothing is saved.

    Args:
        model: a ``PeftModel`` whose trainable adapter is ``"default"`` (see ``sft.attach_adapter``),
            possibly already trained by SFT in this round. It is trained in place.
        tokenizer: its tokenizer, with a chat template.
        method: ``"dpo"`` (rows ``{"prompt", "chosen", "rejected"}``) or ``"kto"`` (rows
            ``{"prompt", "completion", "label"}``), conversational as ``examples`` writes them.
        rows: the stage's rows; they are also the evaluation set.
        cfg: the round's settings (learning rate, epochs, batch size, max length, seed, device).
        beta: DPO/KTO beta: how far the policy may move from the reference.
        progress: called with (fraction done, message) after every step.
        eval_before: also evaluate before training. Off by default: with ``reference="adapter"``
            the reference equals the policy at that point, so TRL's figures are known without
            running it (rewards and KL 0, DPO loss log 2, KTO loss 0.5) and it costs a pass.
        eval_after: evaluate after training, the source of the result's reward, margin and KL
            figures. Each evaluation is a no-grad policy and reference pass over all rows: a large
            share of a one-epoch stage's time. Without it those figures are the means of TRL's
            training-step logs (``figures_from="training steps"``: each step's batch, before that
            step's update), and ``loss_after`` and ``trl_metrics`` stay empty.
        reference: ``"adapter"`` (TRL's default for a ``PeftModel``: a frozen copy of the adapter
            as the stage begins) or ``"base"`` (the adapters disabled).
        callbacks: more ``TrainerCallback``s (e.g. the trainer's thread count before every step).

    Returns:
        TRL's training loss and its figures, from its evaluation after training or from its
        training steps (see ``PreferenceMetrics``).

    Raises:
        ValueError: unknown method or reference, no rows, rows of the wrong shape, too few KTO
            rows (see ``kto_batch_size``), a model that is not a ``PeftModel`` or already has an
            adapter named ``"ref"``.
        FloatingPointError: TRL reported a non-finite loss.
    """
    from peft import PeftModel

    if method not in _ROW_KEYS:
        raise ValueError(f"unknown preference method {method!r}; expected 'dpo' or 'kto'")
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; expected one of {', '.join(REFERENCES)}")
    _check_rows(method, rows)
    if not isinstance(model, PeftModel) or "default" not in model.peft_config:
        raise ValueError("the preference stage trains the 'default' LoRA adapter of a PeftModel (see attach_adapter)")
    if _TRL_REF_ADAPTER in model.peft_config:
        raise ValueError(
            f"the model already has an adapter named {_TRL_REF_ADAPTER!r}, which TRL needs for its reference"
        )
    if beta <= 0:
        raise ValueError(f"beta must be positive (got {beta})")

    if method == "kto":
        batch_size = kto_batch_size(len(rows), cfg.batch_size)
        # TRL's KTO samples sequentially (the KL pairing is fixed per batch), so rows come in the
        # order given; a seeded shuffle keeps the candidates of one prompt from sharing a batch,
        # where a "mismatched" KL pair would have the same prompt.
        rows = list(rows)
        random.Random(cfg.seed).shuffle(rows)
    else:
        batch_size = cfg.batch_size

    started = time.perf_counter()
    backbone = model.get_base_model()
    if getattr(backbone, "is_activation_checkpointing", False) and not cfg.activation_checkpointing:
        # A Trainer turns checkpointing on but never off, so a model that an earlier trainer left
        # with it on would recompute every forward here too. Not restored: the caller only saves
        # the adapter after this stage.
        backbone.activation_checkpointing_disable()
    try:
        with tempfile.TemporaryDirectory(prefix=f"hitl-{method}-") as scratch:
            trainer = _make_trainer(
                model, tokenizer, method, rows, cfg, beta, batch_size, scratch, progress, callbacks,
                evaluates=eval_before or eval_after,
            )  # fmt: skip
            if reference == "base" and _TRL_REF_ADAPTER in model.peft_config:
                # Without its "ref" copy TRL runs the reference forward with the adapters disabled.
                model.delete_adapter(_TRL_REF_ADAPTER)
            before = _finite(trainer.evaluate()) if eval_before else {}
            output = trainer.train()
            train_logs = _mean_step_logs(trainer.state.log_history)
            after = _finite(trainer.evaluate()) if eval_after else {}
            steps = trainer.state.global_step
    finally:
        # The caller saves the model after all stages: it must hold only the trained adapter.
        if _TRL_REF_ADAPTER in model.peft_config:
            model.delete_adapter(_TRL_REF_ADAPTER)
        model.set_adapter("default")

    loss = float(output.training_loss)
    # _finite drops a NaN or infinite eval_loss, so a missing one is a non-finite one.
    missing_eval = (eval_after and "eval_loss" not in after) or (eval_before and "eval_loss" not in before)
    if not math.isfinite(loss) or missing_eval:
        raise FloatingPointError(
            f"{method.upper()} produced a non-finite loss "
            f"(train {loss}, eval before {before.get('eval_loss', '-')}, after {after.get('eval_loss', '-')})"
        )

    # The figures: TRL's evaluation after training, or else the means of its training-step logs.
    source, prefix = (after, "eval_") if eval_after else (train_logs, "")
    chosen = source.get(f"{prefix}rewards/chosen")
    rejected = source.get(f"{prefix}rewards/rejected")
    if method == "kto":
        kl = source.get(f"{prefix}kl")
    elif chosen is not None and rejected is not None:
        kl = (chosen + rejected) / (2 * beta)
    else:
        kl = None
    result = PreferenceMetrics(
        method=method,
        rows=len(rows),
        steps=steps,
        loss=loss,
        loss_before=before.get("eval_loss"),
        loss_after=after.get("eval_loss"),
        reward_accuracy=source.get(f"{prefix}rewards/accuracies"),
        reward_margin=source.get(f"{prefix}rewards/margins"),
        rewards_chosen=chosen,
        rewards_rejected=rejected,
        kl=kl,
        duration_s=round(time.perf_counter() - started, 2),
        trl_metrics=after,
        metrics_before=before,
        train_metrics=train_logs,
        batch_size=batch_size,
        reference=reference,
        figures_from="evaluation" if eval_after else "training steps",
    )
    log.info(
        "%s: %d rows, %d steps, loss %.4f, eval loss %s -> %s, margin %s, kl %s (reference %s, beta %g, %.1fs)",
        method.upper(),
        len(rows),
        steps,
        loss,
        _fmt(result.loss_before),
        _fmt(result.loss_after),
        _fmt(result.reward_margin),
        _fmt(kl),
        reference,
        beta,
        result.duration_s,
    )
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# Bookkeeping entries of TRL's step logs, not measurements of the step.
_LOG_BOOKKEEPING = {"epoch", "step", "learning_rate", "num_tokens"}


def _mean_step_logs(log_history: list[dict]) -> dict[str, float]:
    """The mean over training steps of each figure TRL logged (logging_steps=1: one entry a step)."""
    sums: dict[str, list[float]] = {}
    for entry in log_history:
        if "loss" not in entry:  # the end-of-training summary and evaluation entries
            continue
        for key, value in _finite(entry).items():
            if key not in _LOG_BOOKKEEPING:
                sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def _make_trainer(model, tokenizer, method, rows, cfg, beta, batch_size, scratch, progress, callbacks=None, evaluates=True):
    from datasets import Dataset

    common = dict(
        # Evaluation batches share the training batch size: KTO builds its KL pairs per batch.
        **cfg.trainer_args(scratch, batch_size),
        num_train_epochs=cfg.preference_epochs,
        learning_rate=cfg.preference_learning_rate,
        beta=beta,
        # The reference forward runs with the policy each step. Precomputing it does the same
        # reference forwards at one epoch (one per row either way), in TRL's constructor, while
        # TRL's "ref" copy of the adapter is still loaded: the precomputed reference would be that
        # copy, not the base that reference="base" asks for. It also writes cache files.
        precompute_ref_log_probs=False,
    )
    dataset = Dataset.from_list(rows)
    callbacks = ([_progress_callback(progress, method.upper())] if progress else []) + list(callbacks or [])
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(loss_type=["sigmoid"], **common)
        trainer_cls = DPOTrainer
    else:
        from trl import KTOConfig, KTOTrainer

        n_good = sum(1 for r in rows if r["label"])
        n_bad = len(rows) - n_good
        # Eq. (8) of the KTO paper, as TRL's warning recommends: weight the rarer kind so both
        # count equally. With one kind only, the other's weight does not matter.
        desirable_weight = n_bad / n_good if n_good and n_bad else 1.0
        args = KTOConfig(loss_type="kto", desirable_weight=desirable_weight, undesirable_weight=1.0, **common)
        trainer_cls = KTOTrainer
    return quiet(
        trainer_cls(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=dataset,
            eval_dataset=dataset if evaluates else None,
            processing_class=tokenizer,
            callbacks=callbacks or None,
        )
    )
