"""Waiting and CPU accounting: polling for a condition, and how much CPU other processes took.

The machine may be shared, so each timed figure is paired with the cores that processes outside
the benchmark used meanwhile (``METER``), and a figure taken under foreign load can be flagged.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator


class CpuMeter:
    """CPU time used by *other* processes, in cores, over an interval (Linux /proc only).

    System-wide busy time minus the time of the given processes (this one, the trainer), so a
    figure can be flagged when something outside the benchmark competed for the CPU.
    """

    def __init__(self) -> None:
        self.pids: list[int] = [os.getpid()]
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = Path("/proc/stat").exists()

    def add(self, pid: int) -> None:
        """Count ``pid`` (e.g. the trainer process) as part of the benchmark."""
        self.pids.append(pid)

    def _ticks(self) -> tuple[int, int]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = user + nice + system + irq + softirq + steal
        own = 0
        for pid in self.pids:
            try:
                own += _process_ticks(pid)
            except OSError:  # the process has gone; its last ticks are simply not subtracted
                continue
        return busy, own

    def reading(self) -> tuple[float, int, int] | None:
        """A point-in-time reading to pass to ``foreign_cores`` later; None without /proc."""
        if not self.available:
            return None
        busy, own = self._ticks()
        return time.perf_counter(), busy, own

    def foreign_cores(self, since: tuple[float, int, int] | None) -> float | None:
        """Average cores used by other processes since ``since`` (None without /proc)."""
        if since is None:
            return None
        t0, busy0, own0 = since
        busy, own = self._ticks()
        wall = time.perf_counter() - t0
        if wall <= 0:
            return None
        return max(0.0, ((busy - busy0) - (own - own0)) / self._tick / wall)


# One meter for the whole run: the trainer's pid is added once its process starts.
METER = CpuMeter()


def _process_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks.

    Raises:
        OSError: no such process (or no /proc).
    """
    # The command name (field 2) may hold spaces, so split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.0005) -> None:
    """Poll ``predicate`` until it holds.

    Raises:
        TimeoutError: it did not hold within ``timeout_s``.
    """
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def wait_until_quiet(pid: int, quiet_s: float = 1.0, timeout_s: float = 60.0) -> float:
    """Wait until process ``pid`` stops using CPU (its start-up imports are done); returns seconds.

    In the app the trainer process is started with the app, long before the first round, so a
    round should not be charged for the process start-up. Without /proc this just waits 5 s.
    """
    started = time.perf_counter()
    if not Path(f"/proc/{pid}/stat").exists():
        time.sleep(5.0)
        return time.perf_counter() - started
    last, last_change = _process_ticks(pid), time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        time.sleep(0.25)
        now = _process_ticks(pid)
        if now != last:
            last, last_change = now, time.perf_counter()
        elif time.perf_counter() - last_change >= quiet_s:
            break
    return time.perf_counter() - started


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch threads (process-wide), then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
