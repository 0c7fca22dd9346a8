"""The background trainer: a separate OS process that runs training rounds, and the app's handle on it.

Serving and training never share a PEFT model (an adapter swap during a generation would change
the answer mid-stream), and a crash, kill or out-of-memory in training must not take the app
down. So the trainer is its own process with its own copy of the base model and a lower CPU
priority. It uses every idle core while no answer is streaming and ``--trainer-threads`` while one
is: the app counts its answers in flight through ``TrainerClient.answering`` (``threads``). It
reports through ``checkpoints/trainer_status.json`` (``status``); the app reads that file and
watches the process, so a trainer that dies is shown as failed and restarted on the next trigger.
On start, before its first request, the trainer loads the base and prepares what every round
needs once (``RoundRunner.prepare``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time

from ..core.config import Settings
from ..core.console import configure
from ..evaluation.gate import gate_summary
from ..feedback.records import utc_now
from ..versions.manifest import RoundRecord, TrainerStatus
from ..versions.registry import Registry
from .round import RoundRunner
from .status import StatusFile
from .threads import ThreadGovernor

log = logging.getLogger(__name__)


def _exit_with_the_app() -> None:
    """End this process as soon as the app process that started it is gone.

    A SIGKILLed app cannot stop its trainer, and an orphaned trainer would go on to publish and
    activate a version behind the back of the next app, racing its new trainer. The parent's
    sentinel becomes ready when the parent exits, however it exits; a staging folder left behind
    is removed by the next app's start-up, and that app marks the round failed.
    """
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        log.warning("the app process is gone; the trainer exits without finishing its round")
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(settings_json: str, base_source: str, jobs, answering=None) -> None:
    """Entry point of the trainer process: serve training requests from ``jobs`` until ``None``.

    Args:
        settings_json: the app's ``Settings`` as JSON (a spawned process shares no objects).
        base_source: folder or hub id of the base model.
        jobs: the queue of requests, ``{"requested_by": name}`` each; ``None`` ends the process.
        answering: the app's count of answers in flight (a shared ``multiprocessing.Value``), or None.
    """
    settings = Settings.model_validate_json(settings_json)
    configure(settings.log_level, process="trainer")
    _exit_with_the_app()
    import torch

    # Answers must stay responsive while training: few threads while they stream (the governor
    # switches before every step and measurement), and a lower CPU priority always.
    torch.set_num_threads(settings.training_config.trainer_threads)
    os.nice(10)
    threads = ThreadGovernor(settings.training_config.trainer_threads, answering)
    runner = RoundRunner(settings, base_source, threads=threads)
    try:
        started = time.perf_counter()
        runner.prepare()
        log.info("trainer ready after %.1f s", time.perf_counter() - started)
    except Exception:  # a round redoes what failed here, and reports its error
        log.exception("preparing the trainer failed; the first round will retry")
    while True:
        job = jobs.get()
        if job is None:
            return
        _serve_job(runner, job["requested_by"])


def _serve_job(runner: RoundRunner, requested_by: str) -> None:
    """Run one requested round, and record its outcome in the status file and the round log."""
    started_at, started = utc_now(), time.perf_counter()
    runner.status.write(state="training", progress=0.01, message="starting", started_at=started_at, last_error=None)

    def record(outcome: str, version: str | None = None, detail: str = "") -> None:
        runner.registry.record_round(
            RoundRecord(
                started_at=started_at,
                duration_s=round(time.perf_counter() - started, 2),
                requested_by=requested_by,
                outcome=outcome,
                version=version,
                detail=detail,
            )
        )

    try:
        version = runner.run(requested_by)
    except Exception as exc:
        log.exception("training round failed")
        error = f"{type(exc).__name__}: {exc}"
        runner.status.write(state="failed", message="training failed", last_error=error)
        record("failed", detail=error)
        return
    if version is None:
        record("nothing_to_train", detail=runner.status.read().message)
        return
    manifest = runner.registry.manifest(version)
    if manifest.held_back:
        message = f"{version} held back by the promotion gate: {gate_summary(manifest)}"
    else:
        message = f"published and serving {version}"
    runner.status.write(state="idle", progress=1.0, message=message, last_version=version)
    record("held_back" if manifest.held_back else "published", version, gate_summary(manifest))


class TrainerClient:
    """The app's handle on the trainer process: start it, send requests, read its status.

    Args:
        settings: the app's settings, passed to the process.
        base_source: folder or hub id of the base model.
    """

    def __init__(self, settings: Settings, base_source: str) -> None:
        self.settings = settings
        self.base_source = base_source
        self.status_file = StatusFile(settings.checkpoints_dir)
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._jobs = None
        self._lock = threading.Lock()
        # Answers in flight in the app, read by the trainer before every step (see ``answering``).
        self._answering = self._ctx.Value("i", 0)
        previous = self.status_file.read()
        if previous.state == "training":
            self._lost_round(previous, "the previous round was interrupted when the app stopped; it will be retried")

    def _ensure_process(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._jobs = self._ctx.Queue()
        self._proc = self._ctx.Process(
            target=worker_main,
            args=(self.settings.model_dump_json(), self.base_source, self._jobs, self._answering),
            name="hitl-trainer",
            daemon=True,
        )
        self._proc.start()
        log.info("trainer process started (pid %d)", self._proc.pid)

    def start(self) -> None:
        """Start the trainer process now, so its imports are warm before the first round."""
        with self._lock:
            self._ensure_process()

    def status(self) -> TrainerStatus:
        """The trainer's status, marked failed if its process died mid-round."""
        status = self.status_file.read()
        proc = self._proc
        if status.state == "training" and proc is not None and not proc.is_alive():
            code = proc.exitcode
            why = "killed" if code is not None and code < 0 else "exited"
            status = self._lost_round(
                status,
                f"trainer process {why} (exit code {code}) during the round; serving continues, the next trigger retries",
            )
        return status

    def _lost_round(self, status: TrainerStatus, error: str) -> TrainerStatus:
        """Mark a round whose process died (or whose app stopped) failed, in the status and the round log."""
        started_at = status.started_at or utc_now()
        Registry(self.settings.checkpoints_dir).record_round(
            RoundRecord(
                started_at=started_at,
                duration_s=round(max(0.0, (utc_now() - started_at).total_seconds()), 2),
                requested_by=status.requested_by or "unknown",
                outcome="failed",
                detail=error,
            )
        )
        return self.status_file.write(state="failed", last_error=error)

    def answering(self, busy: bool) -> None:
        """Tell the trainer that an answer started (``True``) or ended (``False``) streaming.

        Calls are counted: the trainer keeps to ``--trainer-threads`` while any answer is in flight
        and takes the idle cores again once every started answer has ended, from its next training
        step or measurement. Pair each ``True`` with one ``False`` (in a ``finally``). Cheap: a
        shared integer, no message to the process; it works whether or not the process runs.
        """
        with self._answering.get_lock():
            self._answering.value = self._answering.value + 1 if busy else max(0, self._answering.value - 1)

    def answers_in_flight(self) -> int:
        """How many answers the app has said are streaming now."""
        return self._answering.value

    def busy(self) -> bool:
        """Whether a round is queued or running."""
        return self.status().state == "training"

    def request(self, requested_by: str) -> bool:
        """Queue a training round unless one is already running. Returns whether it was queued."""
        with self._lock:
            if self.busy():
                return False
            self._ensure_process()
            self.status_file.write(
                state="training",
                progress=0.0,
                message=f"queued by {requested_by}",
                started_at=utc_now(),
                requested_by=requested_by,
                last_error=None,
            )
            self._jobs.put({"requested_by": requested_by})
            return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the trainer process to finish and wait for it (terminate if it does not)."""
        with self._lock:
            if self._proc is None:
                return
            if self._proc.is_alive():
                self._jobs.put(None)
                self._proc.join(timeout_s)
                if self._proc.is_alive():
                    self._proc.terminate()
                    self._proc.join(2)
            self._proc = None
