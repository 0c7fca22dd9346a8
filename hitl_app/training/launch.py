"""Running a round's policy training under ``accelerate launch`` (``--train-launcher accelerate``).

The trainer process writes the round's rows and settings to a job file, starts
``accelerate launch`` on ``launched`` with ``--train-processes`` processes, and follows their
output: rank 0 prints its progress as ``PROGRESS_PREFIX`` lines, which become the status file's
progress. Every process trains the same adapter on its share of each batch (DDP: gloo on CPU, NCCL
on GPUs; FSDP or DeepSpeed from ``--accelerate-config``). Rank 0 alone writes the trained adapter
and the stages' figures. The trainer process then loads that adapter and goes on with the round as
usual (reward model, evaluation, gate, publish), so a round publishes exactly once. A process that
fails or is killed ends the launch (``torchrun`` stops the others) and fails the round.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ..core.ports import free_port
from ..versions.manifest import PreferenceMetrics
from .policy import PolicyRows, StageProgress
from .sft import SFTResult

log = logging.getLogger(__name__)

PROGRESS_PREFIX = "HITL-PROGRESS "
RESULT_FILE = "result.json"
ERROR_FILE = "error-rank{rank}.txt"  # a process's exception, one line
ADAPTER_SUBDIR = "adapter"
# Output lines of the launch logged when it fails.
TAIL_LINES = 30
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the hitl_app package


class PolicyJob(BaseModel):
    """What each launched process needs: the base, the adapter to continue, the rows and the settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_source: str
    load_in_4bit: bool = False
    parent_adapter: str | None = None
    out_dir: str
    train: dict  # ``TrainConfig`` fields; ``batch_size`` is per process
    rows: PolicyRows


class LaunchFailed(RuntimeError):
    """The launched training failed: the message names each failed process's exception (its last
    output lines go to the log)."""


@dataclass(frozen=True)
class Launcher:
    """How to launch: how many processes, and an optional accelerate config file (FSDP, DeepSpeed).

    Args:
        processes: processes to start (one per GPU on CUDA).
        config_file: an ``accelerate config`` file; None: plain DDP (torchrun) across ``processes``.
    """

    processes: int
    config_file: Path | None = None

    def command(self, job_file: Path, port: int) -> list[str]:
        """The ``accelerate launch`` command line for ``job_file``, its rendezvous on ``port``."""
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.processes),
               "--num_machines", "1", "--main_process_port", str(port)]  # fmt: skip
        if self.config_file is not None:
            cmd += ["--config_file", str(self.config_file)]
        else:
            # accelerate's torchrun launcher is named for GPUs; the processes choose gloo on a CPU.
            cmd += (["--multi_gpu"] if self.processes > 1 else []) + ["--mixed_precision", "no", "--dynamo_backend", "no"]
        return cmd + ["-m", "hitl_app.training.launched", str(job_file)]

    def run(self, job: PolicyJob, work_dir: Path, progress: StageProgress | None = None) -> "LaunchedPolicy":
        """Run ``job`` under ``accelerate launch`` and return what rank 0 wrote.

        Args:
            job: the job; its ``out_dir`` receives the trained adapter.
            work_dir: a folder for the job file.
            progress: called with rank 0's (stage, fraction, message) after every step.

        Raises:
            LaunchFailed: a process failed, was killed, or rank 0 wrote no result.
        """
        job_file = Path(work_dir) / "job.json"
        job_file.write_text(job.model_dump_json())
        cmd = self.command(job_file, free_port())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        log.info("launching the policy's training in %d process(es): %s", self.processes, " ".join(cmd))
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    if progress is not None:
                        step = json.loads(line[len(PROGRESS_PREFIX):])
                        progress(step["stage"], step["fraction"], step["message"])
                    continue
                tail.append(line.rstrip())
                log.debug("launched: %s", line.rstrip())
            code = proc.wait()
        out = Path(job.out_dir)
        result = out / RESULT_FILE
        if code == 0 and result.is_file():
            return LaunchedPolicy.model_validate_json(result.read_text())
        log.error("the launched training failed; its last output:\n%s", "\n".join(tail))
        errors = [f"rank {path.stem.rsplit('rank', 1)[1]}: {path.read_text()}" for path in sorted(out.glob(ERROR_FILE.format(rank="*")))]
        why = "; ".join(errors) or (f"exit status {code}, no process reported an error" if code else "no result written")
        raise LaunchFailed(f"the launched training failed: {why}")


class LaunchedPolicy(BaseModel):
    """What rank 0 of a launched round reports: each stage's figures (None: the stage did not run)."""

    sft: dict | None = None  # ``SFTResult`` fields
    preference: PreferenceMetrics | None = None
    processes: int = 1

    def sft_result(self) -> SFTResult | None:
        """The SFT stage's figures."""
        return None if self.sft is None else SFTResult(**self.sft)


