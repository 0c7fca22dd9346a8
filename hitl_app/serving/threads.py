"""How many CPU threads an answer may use, and setting them before it runs.

torch's thread count is process-wide, so it is set under the generation lock, where only one
answer runs. The app's policy shares the cores with the trainer process while it trains.
"""

from __future__ import annotations

import os
from typing import Callable, Protocol

import torch

from ..core.config import ServingConfig, resolve_device


class _Trainer(Protocol):
    """What the policy asks of the trainer (``TrainerClient``)."""

    def busy(self) -> bool:
        """Whether a training round is running."""
        ...


def serve_threads_policy(config: ServingConfig, trainer: _Trainer) -> Callable[[], int] | None:
    """How many CPU threads the next answer may use.

    A fixed ``--serve-threads`` is used as given. With 0 (the default) an answer uses every core
    while the trainer is idle, and leaves the trainer's cores alone while it trains: on a small
    machine two processes competing for the same cores slow answers several-fold. Returns None
    (leave torch's setting alone) off CPU.
    """
    if config.serve_threads:
        return lambda: config.serve_threads
    if resolve_device(config.device) != "cpu":
        return None
    cores = os.cpu_count() or 1
    sharing = max(1, cores - config.trainer_threads)
    return lambda: sharing if trainer.busy() else cores


def apply_threads(policy: Callable[[], int] | None) -> None:
    """Set torch's thread count to what ``policy`` allows now (nothing without a policy). Call under the lock."""
    if policy is None:
        return
    wanted = policy()
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
