"""Benchmark ``retrain``: one round on N judgements in the trainer process, from ``request()`` to idle.

The judgements are the mix in ``judgements.py`` (N = 20: 8 edits, 6 rankings, 4 accepts, 2
rejects), so the round runs the SFT stage, then the DPO stage, then the evaluation of the new
version and the promotion gate, as a round in the app does. Beside the wall time it reports the
least time the round's training could take on this CPU (``compute_floor.py``).
This is the trainer's first round, so it includes loading the base model and the lazy imports of
transformers/peft/trl in that process, as the app's first round would.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from ..core.config import Settings
from ..versions.registry import Registry
from .compute_floor import compute_floor
from .plan import BenchConfig
from .judgements import expected_rows, planned_mix, write_judgements
from .rounds import round_figures, start_round, wait_round
from .figures import fmt

if TYPE_CHECKING:
    from ..training.process import TrainerClient

log = logging.getLogger(__name__)


def bench_retrain(cfg: BenchConfig, settings: Settings, tokenizer, trainer: "TrainerClient") -> dict[str, Any]:
    """Benchmark ``retrain`` (see the module docstring): its wall time, rows and both stages' figures."""
    registry = Registry(settings.checkpoints_dir)
    written = write_judgements(settings, tokenizer, cfg.retrain_judgements, start=0)
    expected = expected_rows(written, settings.holdout_fraction)
    mix = planned_mix(cfg.retrain_judgements)
    log.info("retrain: requesting a round on %d judgements %s; expected rows %s", cfg.retrain_judgements, mix, expected)
    pending = start_round(trainer, registry)
    version, wall_s = wait_round(trainer, pending, cfg.round_timeout_s)
    figures = round_figures(registry, pending, version, wall_s)
    mismatched = {k: (v, figures["rows"].get(k)) for k, v in expected.items() if figures["rows"].get(k) != v}
    if mismatched:
        log.warning("retrain: the manifest's rows differ from the expected ones (expected, manifest): %s", mismatched)
    pref = figures["preference"] or {}
    floor = compute_floor(settings.base_model, tokenizer, written, figures["metrics"], os.cpu_count() or 1)
    log.info(
        "retrain: training's arithmetic %.0f GFLOP %s; at this CPU's best fp32 rate (%.1f GFLOP/s on %d threads) "
        "no implementation of this recipe trains in under %.1f s; at the model's own forward-pass rate (%.1f GFLOP/s) "
        "it takes %.1f s",
        floor.gflop["total"], {k: round(v) for k, v in floor.gflop.items() if k != "total"}, floor.gemm_gflops,
        floor.threads, floor.floor_s, floor.forward_gflops, floor.forward_floor_s,
    )
    log.info(
        "retrain: %s after %.1f s wall (manifest %.1f s; SFT %s rows, %s steps, loss %s -> %s; %s %s rows in %s s, "
        "loss %s, reward accuracy %s, margin %s, kl %s; evaluation %s s, gate passed %s; "
        "other processes used %s cores meanwhile)",
        version, wall_s, figures["manifest_duration_s"], figures["sft_rows"], figures["sft_steps"],
        fmt(figures["loss_before"]), fmt(figures["loss_after"]), pref.get("method", "no preference stage"),
        pref.get("rows"), fmt(pref.get("duration_s"), digits=1), fmt(pref.get("loss")),
        fmt(pref.get("reward_accuracy"), digits=2), fmt(pref.get("reward_margin")), fmt(pref.get("kl")),
        fmt(figures["evaluation_duration_s"], digits=1), fmt(figures["gate_passed"]),
        fmt(figures["foreign_cpu_cores"], digits=2),
    )
    return {
        "judgements": cfg.retrain_judgements,
        "mix": mix,
        "holdout_fraction": settings.holdout_fraction,
        "train_method": settings.train_method,
        "expected_rows": expected,
        "rows_match_expected": not mismatched,
        "trainer_threads": settings.trainer_threads,
        "compute_floor": floor.to_dict(),
        **figures,
    }
