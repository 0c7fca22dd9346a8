"""Whether answers are being generated, for background work that must give way to them.

Compiling decode steps is mostly Python (tracing, code generation), and Python threads share one
interpreter lock: a compile running beside an answer takes that lock back from the answer at
every one of its hundreds of operators per token, so a 2-second answer can take minutes. Work
that runs beside answers in the serving process therefore checks ``AnswerActivity`` at every
Python call (``give_way``) and waits, holding nothing, while an answer is being generated.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator


class AnswerActivity:
    """Counts the generations in flight; others may wait for none, or be told when it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Event()
        self._idle.set()
        self._listeners: list[Callable[[bool], None]] = []
        self._last_end = time.monotonic()

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Mark the block as generating an answer."""
        with self._lock:
            self._active += 1
            self._idle.clear()
            first = self._active == 1
        if first:
            self._notify(True)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                last = self._active == 0
                if last:
                    self._last_end = time.monotonic()
                    self._idle.set()
            if last:
                self._notify(False)

    @property
    def busy(self) -> bool:
        """Whether an answer is being generated now."""
        return not self._idle.is_set()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until no answer is being generated; False if ``timeout_s`` passed first."""
        return self._idle.wait(timeout_s)

    def wait_quiet(self, quiet_s: float, stop: threading.Event | None = None) -> bool:
        """Block until no answer has been generated for ``quiet_s`` seconds; False if ``stop`` was set first.

        Background work that itself generates (candidates prepared ahead) waits for this rather
        than for ``wait_idle``, so a clinician who has just had an answer and asks again finds the
        model free.
        """
        while stop is None or not stop.is_set():
            if not self._idle.wait(0.5):  # checks ``stop`` at least twice a second
                continue
            with self._lock:
                left = quiet_s - (time.monotonic() - self._last_end) if self._active == 0 else quiet_s
            if left <= 0:
                return True
            if stop is not None:
                if stop.wait(left):
                    return False
            else:
                time.sleep(left)
        return False

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` when answering starts and ``listener(False)`` when it stops."""
        self._listeners.append(listener)

    def _notify(self, busy: bool) -> None:
        for listener in list(self._listeners):
            listener(busy)


@contextlib.contextmanager
def give_way(activity: AnswerActivity) -> Iterator[None]:
    """In the block, this thread pauses at its next Python call whenever an answer is being generated.

    A per-thread trace function (``sys.settrace`` affects the calling thread only) checks the
    activity at every Python function call and, while an answer runs, waits without the
    interpreter lock. Dynamo and Inductor compile normally under it; they only run a little slower.
    """
    previous = sys.gettrace()

    def pause_for_answers(frame, event, arg):
        if event == "call" and activity.busy:
            activity.wait_idle()
        return None  # no per-line tracing

    sys.settrace(pause_for_answers)
    try:
        yield
    finally:
        sys.settrace(previous)
