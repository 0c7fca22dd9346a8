"""The background trainer: a separate OS process that turns new judgements into a new version.

Serving and training never share a PEFT model (an adapter swap during a generation would change
the answer mid-stream), and a crash, kill or out-of-memory in training must not take the app
down. So the trainer is its own process with its own copy of the base model and few CPU threads.
It reports through ``checkpoints/trainer_status.json``; the app reads that file and watches the
process, so a trainer that dies is shown as failed and restarted on the next trigger.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from ..evaluation.clinical_text import ClinicalTextJudge
from ..core.config import Settings
from ..core.console import configure
from ..evaluation.estimators import ModelView
from ..feedback.training_rows import build_rows
from ..core.files import atomic_write_text
from ..evaluation.gate import decide, gate_summary
from ..feedback.ledger import FeedbackLedger
from .preference import PreferenceResult, choose_method, train_preference
from ..versions.registry import Registry
from ..feedback.records import BASE_VERSION, utc_now
from ..versions.manifest import (
    Manifest,
    PreferenceMetrics,
    RoundMetrics,
    RoundRecord,
    TrainerStatus,
)
from ..feedback.store import FeedbackStore
from .sft import TrainConfig, attach_adapter, train_sft
from ..evaluation.version_eval import build_eval_sets, evaluate_version

log = logging.getLogger(__name__)

STATUS_FILE = "trainer_status.json"
# Share of the progress bar for training; evaluation before publishing takes the rest.
TRAIN_SHARE = 0.75
FAULT_ENV = "HITL_TRAINER_FAULT"  # test hook: exception | oom | kill, injected at the start of training


class StatusFile:
    """The trainer's status, shared between processes through one atomically replaced file."""

    def __init__(self, checkpoints_dir: Path) -> None:
        self.path = Path(checkpoints_dir) / STATUS_FILE

    def read(self) -> TrainerStatus:
        """The last written status; idle if none was written or the file is unreadable."""
        try:
            return TrainerStatus.model_validate_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return TrainerStatus()
        except ValueError as exc:
            log.error("unreadable trainer status %s: %s", self.path, exc)
            return TrainerStatus(state="failed", last_error=f"unreadable status file: {exc}")

    def write(self, **changes) -> TrainerStatus:
        """Update some fields of the status and persist it."""
        status = self.read().model_copy(update={**changes, "updated_at": utc_now()})
        atomic_write_text(self.path, status.model_dump_json(indent=2))
        return status


class RoundRunner:
    """Runs training rounds in the current process (the trainer process, or a test).

    Args:
        settings: the app's settings (LoRA, optimiser, replay, storage).
        base_source: folder or hub id of the base model.
    """

    def __init__(self, settings: Settings, base_source: str) -> None:
        self.settings = settings
        self.base_source = base_source
        self.registry = Registry(settings.checkpoints_dir)
        self.ledger = FeedbackLedger(FeedbackStore(settings.feedback_dir))
        self.status = StatusFile(settings.checkpoints_dir)
        self.cfg = TrainConfig.from_settings(settings)
        self._base = None
        self._tokenizer = None
        self._judge: tuple[str | None, ClinicalTextJudge] | None = None  # (system prompt, judge), calibrated once

    def _load(self):
        from ..serving.base_model import LoadOptions, load_base, load_tokenizer

        if self._base is None:
            options = LoadOptions(device=self.cfg.device, load_in_4bit=self.settings.load_in_4bit)
            self._tokenizer = load_tokenizer(self.base_source)
            self._base = load_base(self.base_source, options)
        return self._base, self._tokenizer

    def run(self, requested_by: str) -> str | None:
        """Train one round on the judgements since the last version; publish and activate it.

        A round is an SFT stage on the accepted and edited answers, then a preference stage
        (DPO on pairs, else KTO on labels; see ``--train-method``), each run only if it has rows.

        Returns:
            The new version's name, or None when there was nothing new to train on.
        """
        started = time.perf_counter()
        self.ledger.refresh()
        cursor = self.registry.consumed_cursor()
        new = self.ledger.judgements(after=cursor)
        older = [j for j in self.ledger.judgements() if j.offset < cursor]
        rows = build_rows(
            new,
            older,
            self.settings.replay_size,
            self.settings.seed + len(self.registry.versions()),
            self.settings.holdout_fraction,
        )
        method = choose_method(self.settings.train_method, len(rows.dpo), len(rows.kto))
        preference_rows = {"dpo": rows.dpo, "kto": rows.kto}.get(method or "", [])
        # Replayed rows alone teach nothing new: a round needs rows from at least one new judgement.
        if not (rows.sft or preference_rows) or not set(rows.new_record_ids) & set(rows.record_ids):
            self.status.write(
                state="idle",
                progress=0.0,
                message=f"nothing to train: {len(new)} new judgement(s) give no rows for --train-method {self.settings.train_method}",
            )
            return None
        parent = self.registry.active().version
        self.status.write(progress=0.02, message=f"loading the base model for {len(rows.sft)} SFT + {len(preference_rows)} {method or ''} rows")
        base, tokenizer = self._load()
        _inject_fault()
        model = attach_adapter(base, None if parent == BASE_VERSION else self.registry.adapter_dir(parent), self.cfg)
        # Share the progress bar between the stages by their rough cost: a preference row is a
        # chosen and a rejected sequence, each through the policy and the reference; evaluation
        # takes about a third of training.
        sft_cost, pref_cost = len(rows.sft), 4 * len(preference_rows)
        split = TRAIN_SHARE * sft_cost / (sft_cost + pref_cost)
        staging = self.registry.staging_dir()
        try:
            sft = None
            if rows.sft:
                sft = train_sft(
                    model,
                    tokenizer,
                    rows.sft_new,
                    self.cfg,
                    progress=lambda f, m: self._progress(f * split, m),
                    replay=rows.sft_replay,
                )
            preference = None
            if method is not None:
                result = train_preference(
                    model,
                    tokenizer,
                    method,
                    preference_rows,
                    self.cfg,
                    beta=self.settings.beta,
                    progress=lambda f, m: self._progress(split + f * (TRAIN_SHARE - split), m),
                    reference="base",
                )
                preference = _preference_metrics(result)
            model.save_pretrained(str(staging))
            trained_s = time.perf_counter() - started
            sets = build_eval_sets(self.ledger.judgements(), self.settings)
            if self._judge is None or self._judge[0] != sets.system_prompt:
                judge = ClinicalTextJudge.calibrate(ModelView.base(model), tokenizer, sets.system_prompt)
                self._judge = (sets.system_prompt, judge)
            report = evaluate_version(
                model,
                tokenizer,
                parent,
                None if parent == BASE_VERSION else self.registry.adapter_dir(parent),
                sets,
                self.settings,
                progress=lambda f, m: self._progress(TRAIN_SHARE + f * (1 - TRAIN_SHARE), m),
                judge=self._judge[1],
                serving_samples=None if parent == BASE_VERSION else self.registry.manifest(parent).samples,
            )
            evaluation = report.metrics
            gate = decide(evaluation, self.settings)
            manifest = Manifest(
                version="pending",
                parent=parent,
                base_model=str(self.base_source),
                record_ids=rows.record_ids,
                new_record_ids=rows.new_record_ids,
                store_cursor=self.ledger.cursor,
                config={
                    **self.cfg.to_dict(),
                    "replay_size": self.settings.replay_size,
                    "train_method": self.settings.train_method,
                    "beta": self.settings.beta,
                    "holdout_fraction": self.settings.holdout_fraction,
                    "requested_by": requested_by,
                },
                metrics=RoundMetrics(
                    train_loss_before=sft.loss_before if sft else None,
                    train_loss_after=sft.loss_after if sft else None,
                    duration_s=round(time.perf_counter() - started, 2),
                    train_duration_s=round(trained_s, 2),
                    rows=rows.counts,
                    sft_steps=sft.steps if sft else 0,
                    preference=preference,
                ),
                evaluation=evaluation,
                gate=gate,
                samples=report.samples,
            )
            version = self.registry.publish(staging, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            # Strip the LoRA layers so the next round starts from the clean base without a reload.
            self._base = model.unload()
        if gate.passed:
            self.registry.set_active(version, by="trainer", reason=f"trained on {len(new)} new judgement(s)")
        else:
            log.warning("%s held back by the promotion gate: %s", version, gate_summary(manifest))
        return version

    def _progress(self, fraction: float, message: str) -> None:
        self.status.write(progress=round(min(0.99, 0.05 + 0.94 * fraction), 3), message=message)


def _preference_metrics(result: PreferenceResult) -> PreferenceMetrics:
    """The manifest's record of a preference stage: TRL's figures after training."""
    return PreferenceMetrics(
        method=result.method,
        rows=result.rows,
        steps=result.steps,
        loss=result.loss,
        loss_before=result.eval_loss_before,
        loss_after=result.eval_loss_after,
        reward_accuracy=result.reward_accuracy,
        reward_margin=result.reward_margin,
        rewards_chosen=result.rewards_chosen,
        rewards_rejected=result.rewards_rejected,
        kl=result.kl,
        duration_s=round(result.duration_s, 2),
        trl_metrics=result.metrics,
    )


def _inject_fault() -> None:
    fault = os.environ.get(FAULT_ENV, "")
    if fault == "exception":
        raise RuntimeError("injected trainer fault")
    if fault == "oom":
        import torch

        raise torch.OutOfMemoryError("injected out-of-memory in the trainer")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


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


def worker_main(settings_json: str, base_source: str, jobs) -> None:
    """Entry point of the trainer process: serve training requests from ``jobs`` until ``None``."""
    settings = Settings.model_validate_json(settings_json)
    configure(settings.log_level, process="trainer")
    _exit_with_the_app()
    import torch

    # Answers must stay responsive while training: few threads, and a lower CPU priority.
    torch.set_num_threads(settings.trainer_threads)
    os.nice(10)
    runner = RoundRunner(settings, base_source)
    while True:
        job = jobs.get()
        if job is None:
            return
        started_at, started = utc_now(), time.perf_counter()
        runner.status.write(state="training", progress=0.01, message="starting", started_at=started_at, last_error=None)

        def record(outcome: str, version: str | None = None, detail: str = "") -> None:
            runner.registry.record_round(
                RoundRecord(
                    started_at=started_at,
                    duration_s=round(time.perf_counter() - started, 2),
                    requested_by=job["requested_by"],
                    outcome=outcome,
                    version=version,
                    detail=detail,
                )
            )

        try:
            version = runner.run(job["requested_by"])
        except Exception as exc:
            log.exception("training round failed")
            error = f"{type(exc).__name__}: {exc}"
            runner.status.write(state="failed", message="training failed", last_error=error)
            record("failed", detail=error)
            continue
        if version is None:
            record("nothing_to_train", detail=runner.status.read().message)
            continue
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
        previous = self.status_file.read()
        if previous.state == "training":
            self._lost_round(previous, "the previous round was interrupted when the app stopped; it will be retried")

    def _ensure_process(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._jobs = self._ctx.Queue()
        self._proc = self._ctx.Process(
            target=worker_main,
            args=(self.settings.model_dump_json(), self.base_source, self._jobs),
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
