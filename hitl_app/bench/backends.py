"""Benchmark ``backends``: the local backend against vLLM, side by side in one run.

For each backend, as the app builds it (``ModelManager`` in this process; ``VllmModels`` on a vLLM
server that the benchmark starts from ``--vllm-python``, or the one at ``HITL_BENCH_VLLM_URL``):

- **1 and 8 clinicians:** one client asks ``backends_clients`` questions in turn, then that many
  clients ask at the same moment, each for ``concurrency_k`` sampled candidates; aggregate answer
  tokens per second and p95 latency of each, rounds alternating.
- **Swap time:** publish → served, for freshly published versions: ``activate`` reads the adapter
  and hot-swaps it in (local), or loads it into vLLM and waits for a probe answer (vLLM). The
  ACTIVE watcher's poll interval (50 ms) comes on top of both.

The versions are random adapters of the app's LoRA shape; the base answers the timed questions.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..evaluation.evalsets import load_eval_questions
from ..feedback.records import BASE_VERSION
from ..versions.registry import Registry
from .adapters import publish_random_adapters
from .concurrency import all_at_once, alternate, one_client
from .figures import ratio
from .plan import BenchConfig
from .workspace import app_sampling, make_settings, serving

log = logging.getLogger(__name__)


def _clients(models, questions: list[str], k: int, sampling, rounds: int) -> dict[str, Any]:
    """One client in turn and all at once, ``rounds`` alternating rounds each, after a warm-up of both."""
    one_client(models, questions[:1], k, sampling)
    all_at_once(models, questions, k, sampling)
    one, many = alternate(models, questions, k, sampling, rounds)
    return {"one_client": one, "all_at_once": many}


def _swaps(activate: Callable[[str], Any], versions: list[str]) -> dict[str, Any]:
    """Time ``activate`` on each version in turn (each loaded for the first time), then back to base."""
    times = []
    for version in versions:
        started = time.perf_counter()
        activate(version)
        times.append(time.perf_counter() - started)
    activate(BASE_VERSION)
    return {"median_s": statistics.median(times), "max_s": max(times), "swaps": len(times)}


def bench_backends(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``backends`` (see the module docstring)."""
    from ..app import vllm_models

    settings = make_settings(root, base, cfg)
    registry = Registry(settings.checkpoints_dir)
    versions = publish_random_adapters(settings, base, count=cfg.backends_swaps)
    registry.set_active(BASE_VERSION, by="bench", reason="the timed answers come from the base")
    k, clients = cfg.concurrency_k, cfg.backends_clients
    sampling = app_sampling(settings).model_copy(update={"max_new_tokens": cfg.backends_max_new_tokens})
    questions = [q.question for q in load_eval_questions()[:clients]]
    results: dict[str, Any] = {"clients": clients, "candidates": k, "max_new_tokens": sampling.max_new_tokens}

    with serving(settings, base, tokenizer, watch=False) as models:
        models.pending.max_batch = clients
        models.sampling = sampling
        if models.start_compiled_decoding(rows=(1, k)) and not models.fast.compiled.wait():
            log.warning("backends: compiling failed (%s); local answers decode uncompiled", models.fast.compiled.error)
        results["local"] = _clients(models, questions, k, sampling, cfg.backends_rounds)
        results["local"]["swap"] = _swaps(models.activate, versions)

    url = os.environ.get("HITL_BENCH_VLLM_URL")
    vllm_settings = settings.model_copy(update={"serve_backend": "vllm", "vllm_url": url})
    started = time.perf_counter()
    models = vllm_models(vllm_settings, str(base), tokenizer, registry, sampling, judges=None)
    try:
        results["vllm_start_s"] = None if url else time.perf_counter() - started
        results["vllm"] = _clients(models, questions, k, sampling, cfg.backends_rounds)
        results["vllm"]["swap"] = _swaps(models.activate, versions)
    finally:
        models.close()

    for name in ("one_client", "all_at_once"):
        results[f"{name}_vllm_over_local_tokens_per_s"] = ratio(
            results["vllm"][name]["tokens_per_s"], results["local"][name]["tokens_per_s"]
        )
    for backend in ("local", "vllm"):
        r = results[backend]
        log.info(
            "backends: %s: 1 client %.1f tok/s, p95 %.1f s; %d clients at once %.1f tok/s, p95 %.1f s; swap %.0f ms",
            backend, r["one_client"]["tokens_per_s"], r["one_client"]["p95_latency_s"], clients,
            r["all_at_once"]["tokens_per_s"], r["all_at_once"]["p95_latency_s"], r["swap"]["median_s"] * 1e3,
        )  # fmt: skip
    return results
