"""Benchmark ``rounds``: consecutive rounds of N judgements each in the trainer process, replay included.

Before each round, N new judgements (the mix in ``judgements.py``) are written to the store; the
trainer then trains on them plus its bounded replay sample of the older ones, evaluates the new
version against the serving one (whose figures on the shipped data it reads back from the
serving version's manifest) and publishes. Each round's wall time, from ``request()`` to idle, is
reported with its stages' times, its rows (new and replayed) and where the serving figures came
from, so that round cost can be seen to follow the new judgements plus the bounded replay, not the
store's size.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from ..core.config import Settings
from ..feedback.ledger import FeedbackLedger
from ..feedback.store import FeedbackStore
from ..versions.registry import Registry
from .compute_floor import compute_floor
from .figures import fmt
from .judgements import write_judgements
from .plan import BenchConfig
from .rounds import round_figures, start_round, wait_round

if TYPE_CHECKING:
    from ..training.process import TrainerClient

log = logging.getLogger(__name__)

ROUNDS = 5


def bench_rounds_replay(
    cfg: BenchConfig, settings: Settings, tokenizer, trainer: "TrainerClient", rounds: int = ROUNDS
) -> dict[str, Any]:
    """Run ``rounds`` consecutive rounds of ``cfg.retrain_judgements`` new judgements each; report every round."""
    registry = Registry(settings.checkpoints_dir)
    ledger = FeedbackLedger(FeedbackStore(settings.feedback_dir))
    n = cfg.retrain_judgements
    series: list[dict[str, Any]] = []
    written = []
    for k in range(rounds):
        ledger.refresh()
        start = len(ledger.judgements())  # continues after any earlier benchmark's judgements
        written += write_judgements(settings, tokenizer, n, start=start)
        pending = start_round(trainer, registry)
        version, wall_s = wait_round(trainer, pending, cfg.round_timeout_s)
        figures = round_figures(registry, pending, version, wall_s)
        rows = figures["rows"]
        evaluation = figures["evaluation"] or {}
        pref = figures["preference"] or {}
        # Replayed rows come from the same items as the new ones, so every row written so far is typical.
        floor = compute_floor(settings.base_model, tokenizer, written, figures["metrics"], os.cpu_count() or 1)
        entry = {
            "round": k + 1,
            "version": version,
            "parent": figures["parent"],
            "judgements_in_store": start + n,
            "wall_s": wall_s,
            "manifest_duration_s": figures["manifest_duration_s"],
            "train_duration_s": figures["train_duration_s"],
            "sft_duration_s": figures["sft_duration_s"],
            "sft_steps": figures["sft_steps"],
            "preference_duration_s": pref.get("duration_s"),
            "preference_rows": pref.get("rows"),
            "evaluation_duration_s": figures["evaluation_duration_s"],
            "sft_rows": rows.get("sft"),
            "replayed_judgements": sum(v for key, v in rows.items() if key.startswith("replay_")),
            "serving_figures_from": sorted(set((evaluation.get("reused") or {}).values())) or ["measured"],
            "reduced": evaluation.get("reduced") or {},
            "budget": (figures["metrics"] or {}).get("budget"),
            "gate_passed": figures["gate_passed"],
            "foreign_cpu_cores": figures["foreign_cpu_cores"],
            "compute_floor": floor.to_dict(),
        }
        series.append(entry)
        log.info(
            "rounds: round %d -> %s (parent %s) in %.1f s wall: SFT %s s (%s steps, %s replayed judgements), "
            "preference %s s (%s rows), evaluation %s s (serving figures from %s); training's floor on this CPU %.1f s; "
            "other processes used %s cores",
            k + 1, version, entry["parent"], wall_s, fmt(entry["sft_duration_s"], digits=1), entry["sft_steps"],
            entry["replayed_judgements"], fmt(entry["preference_duration_s"], digits=1), entry["preference_rows"],
            fmt(entry["evaluation_duration_s"], digits=1), ", ".join(entry["serving_figures_from"]), floor.floor_s,
            fmt(entry["foreign_cpu_cores"], digits=2),
        )  # fmt: skip
    return {
        "rounds": rounds,
        "judgements_per_round": n,
        "replay_size": settings.replay_size,
        "round_budget_s": settings.round_budget_s,
        "trainer_threads": settings.trainer_threads,
        "series": series,
        "last_wall_s": series[-1]["wall_s"] if series else None,
        "last_floor_s": series[-1]["compute_floor"]["floor_s"] if series else None,
    }
