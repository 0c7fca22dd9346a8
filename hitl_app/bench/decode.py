"""Benchmark ``decode``: batch-1 greedy decoding, plain fp32 ``generate`` against the fast path.

One ``ModelManager`` serves a published LoRA version (random, of the app's shape, so the fast
path really merges a delta). Each answer is timed once with the plain path (the fp32 PEFT
model's ``generate``) and once with the fast path (``hitl_app.fastpath``: a bf16 merged copy),
interleaved prompt by prompt and in alternating order, for each serving thread count, so both
see the same machine load. Figures: median answer tokens per second of each path, their ratio,
the share of prompts whose greedy answers are identical and the mean shared-prefix fraction,
the time a merge (version change) takes, and whether the fast path reaches the goal.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..schema import Sampling
from .adapters import publish_random_adapters
from .config import BenchConfig
from .stats import ratio
from .timing import METER, torch_threads
from .workspace import make_settings

if TYPE_CHECKING:
    from ..models import ModelManager

log = logging.getLogger(__name__)


def shared_prefix_fraction(a: list[int], b: list[int]) -> float:
    """The length of the common prefix of two token lists, over the longer one's length (1.0 if both empty)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / longest


def _answer(models: "ModelManager", prompt: str, sampling: Sampling, fast) -> tuple[float, str]:
    """One greedy answer with the fast copy switched in (``fast``) or out (None): tokens/s and text."""
    models.fast = fast
    answer = models.generate(prompt, sampling=sampling)
    return answer.new_tokens / answer.seconds, answer.candidates[0]


def bench_decode(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``decode`` (see the module docstring), in its own workspace under ``root``."""
    import time

    import torch

    from ..evalsets import load_eval_questions
    from .workspace import build_manager

    # bfloat16 rather than auto: the benchmark measures the fast path even where auto would not pick it.
    settings = make_settings(root, base, cfg).model_copy(update={"serve_dtype": "bfloat16"})
    versions = publish_random_adapters(settings, base, count=1)
    models = build_manager(settings, base, tokenizer)
    fast = models.fast
    if fast is None:
        raise RuntimeError("the fast path was not built (serve_dtype bfloat16 needs a CPU device)")
    dtype = fast.dtype
    sampling = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=cfg.decode_max_new_tokens)
    prompts = [q.question for q in load_eval_questions()][: cfg.decode_prompts]

    # A merge happens whenever the copy must hold another version than the one it holds.
    merges = []
    with torch.inference_mode():
        for version in ("base", versions[-1]):
            started = time.perf_counter()
            with models._adapter_for(version):
                fast.prepare(models.model, version)
            merges.append(time.perf_counter() - started)

    since = METER.reading()
    per_threads: dict[str, Any] = {}
    for threads in cfg.serve_threads:
        with torch_threads(threads):
            _answer(models, prompts[0], sampling, None)  # warm-up of both paths
            _answer(models, prompts[0], sampling, fast)
            speeds: dict[str, list[float]] = {"plain": [], "fast": []}
            texts: dict[str, list[str]] = {"plain": [], "fast": []}
            for rep in range(cfg.decode_reps):
                for i, prompt in enumerate(prompts):
                    order = ("plain", "fast") if (rep + i) % 2 == 0 else ("fast", "plain")
                    for path in order:
                        speed, text = _answer(models, prompt, sampling, fast if path == "fast" else None)
                        speeds[path].append(speed)
                        if rep == 0:
                            texts[path].append(text)
            plain_s, fast_s = statistics.median(speeds["plain"]), statistics.median(speeds["fast"])
            log.info("decode, %d threads: plain %.1f tok/s, fast %.1f tok/s (%.2fx)", threads, plain_s, fast_s, fast_s / plain_s)
            per_threads[str(threads)] = {
                "plain_tokens_per_s": plain_s,
                "fast_tokens_per_s": fast_s,
                "ratio_fast_over_plain": ratio(fast_s, plain_s),
                "plain_samples": speeds["plain"],
                "fast_samples": speeds["fast"],
                "texts": texts,
            }
    models.fast = fast
    models.close()
    foreign = METER.foreign_cores(since)

    # Agreement, from the first repetition at the first thread count (greedy: every rep is the same).
    first = per_threads[str(cfg.serve_threads[0])]["texts"]
    plain_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in first["plain"]]
    fast_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in first["fast"]]
    identical = sum(a == b for a, b in zip(first["plain"], first["fast"])) / len(prompts)
    prefix = statistics.mean(shared_prefix_fraction(a, b) for a, b in zip(plain_ids, fast_ids))
    best = max(per_threads.values(), key=lambda row: row["fast_tokens_per_s"])
    return {
        "version": versions[-1],
        "fast_dtype": str(dtype),
        "prompts": len(prompts),
        "reps": cfg.decode_reps,
        "max_new_tokens": cfg.decode_max_new_tokens,
        "per_threads": per_threads,
        "best_fast_tokens_per_s": best["fast_tokens_per_s"],
        "best_plain_tokens_per_s": max(row["plain_tokens_per_s"] for row in per_threads.values()),
        "identical_share": identical,
        "mean_shared_prefix_fraction": prefix,
        "merge_s": merges,
        "foreign_cpu_cores": foreign,
    }
