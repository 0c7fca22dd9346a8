"""A vLLM OpenAI server that the app starts and stops itself (``--serve-backend vllm`` without ``--vllm-url``).

vLLM runs from its own environment (``make vllm-env``): its CPU build pins an older transformers
than the app's. The server is started as ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm`` command looks up a distribution of that name, which the CPU build is not), with LoRA
enabled and runtime adapter loading allowed, the base served under the name ``base``. Its output
goes to the log at debug level; the last lines are kept for the error when it fails to start.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..core.errors import UserError
from ..core.ports import free_port
from ..feedback.records import BASE_VERSION

log = logging.getLogger(__name__)


class VllmStartFailed(UserError):
    """The vLLM server exited or did not answer before its start-up deadline."""


@dataclass
class VllmServerSpec:
    """What the server serves and how much of it.

    Args:
        python: the interpreter with vLLM installed.
        model: the base model's folder (or hub id, on a machine that reaches a hub).
        max_lora_rank: the largest LoRA rank a version may have (the app's ``--lora-r``).
        max_loras: adapters vLLM keeps on the device at once (``--vllm-max-loaded``).
        max_model_len: the longest sequence (prompt and answer) it schedules.
        extra_args: further ``api_server`` arguments, e.g. ``["--dtype", "float16"]``.
    """

    python: Path
    model: str
    max_lora_rank: int
    max_loras: int
    max_model_len: int
    extra_args: list[str] = field(default_factory=list)

    def command(self, port: int) -> list[str]:
        """The server's command line, listening on 127.0.0.1:``port``."""
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model, "--served-model-name", BASE_VERSION,
            "--host", "127.0.0.1", "--port", str(port),
            "--enable-lora", "--max-lora-rank", str(_lora_rank_bucket(self.max_lora_rank)),
            "--max-loras", str(self.max_loras), "--max-model-len", str(self.max_model_len),
            *self.extra_args,
        ]  # fmt: skip


def _stop_with_parent() -> None:
    # In the child before exec: Linux sends it SIGTERM when the thread that started it ends (the app
    # killed, or its watcher thread gone), so a killed app never leaves vLLM holding the GPU.
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def vllm_server_args(extra: str) -> list[str]:
    """The admin's extra server arguments (``--vllm-args``), plus a memory share on a machine without CUDA.

    vLLM's CPU backend reserves ``--gpu-memory-utilization`` of the machine's memory for its cache
    (0.92 by default, which fails beside the app); a fifth holds a small model's cache many times over.
    """
    import shlex

    import torch

    args = shlex.split(extra)
    if not torch.cuda.is_available() and not any(a.startswith("--gpu-memory-utilization") for a in args):
        args += ["--gpu-memory-utilization", "0.2"]
    return args


def _lora_rank_bucket(rank: int) -> int:
    # vLLM accepts only these ranks for --max-lora-rank; the smallest that holds the app's rank.
    for bucket in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= bucket:
            return bucket
    raise UserError(f"vLLM serves LoRA ranks up to 512; --lora-r is {rank}")


class VllmServer:
    """One vLLM OpenAI server process on a free local port.

    Args:
        spec: what to serve.
        start_timeout_s: how long ``start`` waits for the server to answer ``/health``.
    """

    def __init__(self, spec: VllmServerSpec, start_timeout_s: float = 600.0) -> None:
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)

    def start(self) -> str:
        """Start the server and wait until it answers; returns its base URL.

        Raises:
            VllmStartFailed: it exited, or did not answer within ``start_timeout_s``; the error
                holds the last lines it printed.
        """
        port = free_port()
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)  # the app's packages must not shadow vLLM's environment
        log.info("starting vLLM on port %d: %s", port, " ".join(self.spec.command(port)))
        self.process = subprocess.Popen(
            self.spec.command(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,  # a Ctrl-C in the app's terminal reaches the app, which stops vLLM in order
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        threading.Thread(target=self._pump, args=(self.process,), name="vllm-log", daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VllmStartFailed(self._failure(f"vLLM exited with status {self.process.returncode} while starting"))
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    log.info("vLLM is serving %s at %s", self.spec.model, self.url)
                    return self.url
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.5)
        self.stop()
        raise VllmStartFailed(self._failure(f"vLLM did not answer within {self.start_timeout_s:.0f} s"))

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _pump(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            self._tail.append(line)
            log.debug("vllm: %s", line)

    def _failure(self, what: str) -> str:
        tail = "\n".join(list(self._tail)[-15:])
        return f"{what}; its last lines:\n{tail}" if tail else what
