"""Benchmark ``startup``: the app's first answers after ``python main.py`` with a cold compiler cache.

The app is started as a user starts it (``main.py``, a subprocess, its own workspace) on the
converted embedded base, with an empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR`` pointing at a
new folder): the first start on a machine, when every decode shape must be compiled from scratch.
As soon as it answers HTTP, one clinician asks the shipped evaluation questions through the
``/ask`` endpoint, one after the other with a pause between them, for ``startup_window_s``: the
first answer's latency, and the p95 over the window, while compiling goes on in the background.
Once compiling is done (``/status``), ``startup_steady_answers`` more answers to the same questions
give the steady-state p95. Goals: the first answer within 10 s; the window's p95 at most 1.5 x the
steady p95.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..core.ports import free_port
from ..evaluation.evalsets import load_eval_questions
from .figures import percentile, ratio
from .plan import REPO, BenchConfig
from .timing import METER

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0
COMPILE_TIMEOUT_S = 900.0


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode} before answering HTTP")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the app did not answer HTTP within {timeout_s:.0f} s")


def _compiled(client) -> dict[str, Any] | None:
    fast = (client.predict(api_name="/status") or {}).get("fast_path") or {}
    return fast.get("compiled")


def bench_startup(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``startup`` (see the module docstring)."""
    from gradio_client import Client

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor-cache")}  # empty: a cold start
    command = [
        sys.executable, "main.py", "--base-model", str(base), "--port", str(port), "--no-auto-retrain",
        "--feedback-dir", str(root / "feedback"), "--checkpoints-dir", str(root / "checkpoints"),
        "--max-new-tokens", str(cfg.startup_max_new_tokens),
    ]  # fmt: skip
    questions = [q.question for q in load_eval_questions()[:8]]
    log_path = root / "app.log"
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as app_log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=app_log, stderr=subprocess.STDOUT)
    METER.add(proc.pid)
    try:
        _wait_http(url, proc, READY_TIMEOUT_S)
        ready_s = time.perf_counter() - started
        client = Client(url, verbose=False, ssl_verify=False)
        since = METER.reading()

        def ask(i: int) -> dict[str, Any]:
            t = time.perf_counter()
            reply = client.predict(questions[i % len(questions)], api_name="/ask")
            latency = time.perf_counter() - t
            tokens = sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in reply["candidates"])
            return {"at_s": round(t - started, 2), "latency_s": latency, "tokens": tokens}

        window: list[dict[str, Any]] = []
        window_end = time.perf_counter() + cfg.startup_window_s
        while time.perf_counter() < window_end:
            window.append(ask(len(window)))
            log.info("startup: answer %d at %.0f s took %.2f s", len(window), window[-1]["at_s"], window[-1]["latency_s"])
            time.sleep(cfg.startup_think_s)
        state = _compiled(client)
        deadline = time.monotonic() + COMPILE_TIMEOUT_S
        while state and (state.get("compiling") or state.get("waiting")) and time.monotonic() < deadline:
            time.sleep(2)
            state = _compiled(client)
        steady = []
        for i in range(cfg.startup_steady_answers):
            steady.append(ask(i))
            time.sleep(cfg.startup_think_s)
        foreign = METER.foreign_cores(since)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    window_p95 = percentile([a["latency_s"] for a in window], 95)
    steady_p95 = percentile([a["latency_s"] for a in steady], 95)
    result = {
        "ready_s": ready_s,
        "first_answer_s": window[0]["latency_s"] if window else None,
        "first_answer_tokens": window[0]["tokens"] if window else None,
        "window_s": cfg.startup_window_s,
        "window_answers": len(window),
        "window_p95_s": window_p95,
        "steady_p95_s": steady_p95,
        "p95_ratio": ratio(window_p95, steady_p95),
        "window": window,
        "steady": steady,
        "compiled": state,
        "max_new_tokens": cfg.startup_max_new_tokens,
        "foreign_cpu_cores": foreign,
        "app_log": str(log_path),
    }
    log.info(
        "startup: HTTP after %.1f s; first answer %.2f s; p95 over the first %.0f s %.2f s (%d answers) against "
        "%.2f s steady: %.2fx; compiled %s",
        ready_s, result["first_answer_s"] or -1, cfg.startup_window_s, window_p95 or -1, len(window),
        steady_p95 or -1, result["p95_ratio"] or -1, (state or {}).get("compile_s"),
    )
    return result
