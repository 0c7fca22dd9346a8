"""Faults injected into a training round on request, so tests can check that a failed round fails
cleanly: nothing published, serving unchanged, the failure in the status file.

``HITL_TRAINER_FAULT`` names the fault: ``exception``, ``oom`` or ``kill`` at the start of
training; ``reward`` | ``reward-kill`` and ``rl`` | ``rl-kill`` at the start of those stages;
``rank1`` | ``rank1-kill`` in one process of a launched round (``--train-launcher accelerate``).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "HITL_TRAINER_FAULT"


def inject_fault(stage: str = "") -> None:
    """Raise (or kill this process) if ``HITL_TRAINER_FAULT`` asks for a fault at ``stage``.

    Raises:
        RuntimeError | torch.OutOfMemoryError: the fault asked for.
    """
    fault = os.environ.get(FAULT_ENV, "")
    if stage:
        if fault == f"{stage}-kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == stage:
            raise RuntimeError(f"injected trainer fault in the {stage} stage")
        return
    if fault == "exception":
        raise RuntimeError("injected trainer fault")
    if fault == "oom":
        import torch

        raise torch.OutOfMemoryError("injected out-of-memory in the trainer")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
