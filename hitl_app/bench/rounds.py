"""Rounds in the trainer process: request one, follow it to idle, and read what its manifest reports.

Shared by the ``retrain`` benchmark (one round, timed) and the ``answers`` benchmark (rounds that
keep the trainer busy while answers are timed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..versions.registry import Registry
from ..versions.manifest import Manifest
from .timing import METER, wait_for

if TYPE_CHECKING:
    from ..training.process import TrainerClient

# What the retrain figures keep of the manifest's PreferenceMetrics (the rest is in "metrics").
_PREFERENCE_FIELDS = (
    "method", "rows", "steps", "loss", "loss_before", "loss_after",
    "reward_accuracy", "reward_margin", "kl", "duration_s", "figures_from",
)


@dataclass
class PendingRound:
    """A round requested from the trainer process: when, and which versions existed before."""

    started: float
    known: set[str]
    meter: tuple[float, int, int] | None = None


def start_round(trainer: "TrainerClient", registry: Registry) -> PendingRound:
    """Queue a round in the trainer process (as the service's ``retrain`` does).

    Raises:
        RuntimeError: a round is already running.
    """
    known = set(registry.versions())
    meter = METER.reading()
    started = time.perf_counter()
    if not trainer.request("bench"):
        raise RuntimeError("the trainer is already running a round")
    return PendingRound(started, known, meter)


def poll_round(trainer: "TrainerClient", pending: PendingRound) -> str | None:
    """The new version once the trainer is idle again with one; None while it is training.

    Raises:
        RuntimeError: the round failed, or ended without publishing a version.
    """
    status = trainer.status()
    if status.state == "training":
        return None
    if status.state == "failed":
        raise RuntimeError(f"the training round failed: {status.last_error}")
    if status.last_version and status.last_version not in pending.known:
        return status.last_version
    raise RuntimeError(f"the round ended without a new version: {status.message}")


def wait_round(trainer: "TrainerClient", pending: PendingRound, timeout_s: float) -> tuple[str, float]:
    """Wait until the round is over; returns the new version and the wall seconds since the request.

    Raises:
        RuntimeError: the round failed or published nothing.
        TimeoutError: it did not end within ``timeout_s``.
    """
    version: str | None = None

    def finished() -> bool:
        nonlocal version
        version = poll_round(trainer, pending)
        return version is not None

    wait_for(finished, timeout_s, "the training round", poll_s=0.05)
    wall_s = time.perf_counter() - pending.started
    assert version is not None  # wait_for returned, so finished() saw one
    return version, wall_s


def round_figures(registry: Registry, pending: PendingRound, version: str, wall_s: float | None) -> dict[str, Any]:
    """What a finished round reports: wall time, the manifest's duration and rows, and each stage's figures.

    The round's stages are: read the ledger, load the base (a trainer's first round only, unless
    the trainer prepared it), SFT, the preference stage, save, then evaluate the new version
    against the serving one and apply the promotion gate. ``load_sft_save_s`` is the
    training part minus the preference stage; ``sft_duration_s`` is the manifest's own figure for
    SFT alone if the round records one (None otherwise). Fields a round does not record are None.
    """
    manifest: Manifest = registry.manifest(version)
    metrics = manifest.metrics
    extra = metrics.model_extra or {}
    preference = metrics.preference
    evaluation, gate = manifest.evaluation, manifest.gate
    pref = {name: getattr(preference, name) for name in _PREFERENCE_FIELDS} if preference else None
    pref_s = preference.duration_s if preference else 0.0
    eval_s = evaluation.duration_s if evaluation is not None else None
    train_s = metrics.train_duration_s if metrics.train_duration_s is not None else metrics.duration_s - (eval_s or 0.0)
    return {
        "version": version,
        "parent": manifest.parent,
        "wall_s": wall_s,
        "foreign_cpu_cores": METER.foreign_cores(pending.meter),
        "manifest_duration_s": metrics.duration_s,
        "sft_rows": metrics.rows.get("sft"),
        "rows": metrics.rows,
        "sft_steps": extra.get("sft_steps"),
        "sft_duration_s": extra.get("sft_duration_s"),
        "train_duration_s": train_s,
        "load_sft_save_s": train_s - pref_s,
        "loss_before": metrics.train_loss_before,
        "loss_after": metrics.train_loss_after,
        "preference": pref,
        "evaluation_duration_s": eval_s,
        "evaluation_share_of_training": None if eval_s is None or train_s <= 0 else eval_s / train_s,
        "evaluation": None if evaluation is None else evaluation.model_dump(mode="json"),
        "gate_passed": None if gate is None else gate.passed,
        "gate_failures": [] if gate is None else [check.metric for check in gate.failures],
        "metrics": metrics.model_dump(mode="json"),
    }
