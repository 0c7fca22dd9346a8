"""How many CPU threads the trainer uses: the idle cores while no answer is streaming, few while one is.

The app process counts the answers in flight in a shared integer (``TrainerClient.answering``).
Before every training step and every forward pass (``ThreadGovernor.callback`` and ``watching``;
in a generation, every token) the trainer sets torch's thread count:
``--trainer-threads`` while an answer is in flight, so answers keep the other cores; otherwise
every core that other processes leave idle. A core taken by another process is not used even
then: torch's threads wait for each other at every operation, so one thread descheduled by another
process stalls the rest (a forward pass on two threads of a two-core machine whose other core is
busy takes many times as long as on one thread).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# Shortest interval over which other processes' CPU use is measured; a step shorter than this
# keeps the previous decision.
MIN_SAMPLE_S = 0.2


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process), or None without /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])


class ThreadGovernor:
    """Sets torch's thread count for the trainer's next step (``apply``).

    Args:
        busy_threads: threads while an answer is in flight (``--trainer-threads``).
        answering: a shared integer (``multiprocessing.Value``) counting the answers in flight; None:
            never answering (a round run in the app's own process or a test).
        cores: the machine's cores (default ``os.cpu_count()``).
    """

    def __init__(self, busy_threads: int, answering: Any = None, cores: int | None = None) -> None:
        self.busy_threads = max(1, busy_threads)
        self.answering = answering
        self.cores = max(self.busy_threads, cores or os.cpu_count() or 1)
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last: tuple[float, int, int] | None = None
        self._idle_threads = self.busy_threads  # until other processes' use has been measured once
        self.switches = 0

    def answers_in_flight(self) -> bool:
        """Whether the app is streaming an answer now."""
        return self.answering is not None and self.answering.value > 0

    def idle_threads(self) -> int:
        """Threads while no answer is in flight: every core other processes left idle since the last call."""
        ticks = _cpu_ticks()
        if ticks is None:
            return self.cores
        now = time.monotonic()
        if self._last is not None and now - self._last[0] >= MIN_SAMPLE_S:
            t0, busy0, own0 = self._last
            foreign = max(0.0, ((ticks[0] - busy0) - (ticks[1] - own0)) / self._tick / (now - t0))
            self._idle_threads = max(self.busy_threads, min(self.cores, int(self.cores - foreign + 0.5)))
        if self._last is None or now - self._last[0] >= MIN_SAMPLE_S:
            self._last = (now, *ticks)
        return self._idle_threads

    def threads_now(self) -> int:
        """The thread count the next step should use."""
        idle = self.idle_threads()  # measured every call, so the interval is always recent
        return self.busy_threads if self.answers_in_flight() else idle

    def apply(self) -> int:
        """Set torch's thread count to ``threads_now()``; returns it."""
        import torch

        wanted = self.threads_now()
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
            self.switches += 1
            log.debug("trainer threads -> %d", wanted)
        return wanted

    @contextmanager
    def watching(self, module) -> Iterator[None]:
        """Apply the thread count before every forward pass of ``module`` too, for the block: an answer
        that starts during a long measurement (a greedy generation is one forward per token) or a
        training step's forward gets its cores back at the next forward, not the next step."""
        if module is None:
            yield
            return
        # The decoder, not the wrapper: PEFT calls the wrapper's ``forward`` directly, past its hooks.
        try:
            module = module.get_decoder() if hasattr(module, "get_decoder") else module
        except (AttributeError, ValueError, NotImplementedError):
            pass

        def before_forward(*args) -> None:
            self.apply()

        handle = module.register_forward_pre_hook(before_forward)
        try:
            yield
        finally:
            handle.remove()

    def callback(self):
        """A ``TrainerCallback`` that applies the thread count before every training step."""
        from transformers import TrainerCallback

        governor = self

        class _Threads(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                governor.apply()

        return _Threads()
