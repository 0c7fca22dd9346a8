"""Benchmark ``decode``: batch-1 greedy decoding, plain fp32 ``generate`` against the fast path.

One ``ModelManager`` serves a published LoRA version (random, of the app's shape, so the fast
path really merges a delta). Each answer is timed with three paths, interleaved prompt by prompt
in rotating order, for each serving thread count, so all see the same machine load:

- ``plain``: the fp32 PEFT model's ``generate``;
- ``merged``: the bf16 merged copy decoding uncompiled (``hitl_app.serving.fastpath``), as served until
  compiled decoding is ready, and for batched candidates;
- ``fast``: the same copy with compiled decoding (``hitl_app.serving.compiled_decode``), as served once
  its warm-up is done; the warm-up (one bucket, the one these answers use) is timed too.

Figures: median answer tokens per second of each path, the fast/plain ratio, the share of prompts
whose greedy answers are identical to plain's and the mean shared-prefix fraction, the time a
merge (version change) takes, and whether the fast path reaches the goal.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..feedback.records import Sampling
from .adapters import publish_random_adapters
from .plan import BenchConfig
from .figures import ratio
from .timing import METER, torch_threads
from .workspace import make_settings

if TYPE_CHECKING:
    from ..serving.manager import ModelManager

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


PATHS = ("plain", "merged", "fast")


def _answer(models: "ModelManager", prompt: str, sampling: Sampling, path: str, fast, compiled) -> tuple[float, str]:
    """One greedy answer on ``path`` (see the module docstring): tokens/s and text."""
    models.fast = None if path == "plain" else fast
    fast.compiled = compiled if path == "fast" else None
    answer = models.generate(prompt, sampling=sampling)
    return answer.new_tokens / answer.seconds, answer.candidates[0]


def bench_decode(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``decode`` (see the module docstring), in its own workspace under ``root``."""
    import time

    import torch

    from ..serving.compiled_decode import default_buckets
    from ..evaluation.evalsets import load_eval_questions
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

    # The bucket the app would use first for answers of this length; compiled before timing.
    bucket = default_buckets(cfg.decode_max_new_tokens, models.context_length)[0]
    models.start_compiled_decoding((bucket,))
    if not fast.compiled.wait():
        raise RuntimeError(f"compiled decoding failed to warm up: {fast.compiled.error}")
    compiled = fast.compiled
    compile_s = compiled.compile_s[(bucket, 1)]

    # A merge happens whenever the copy must hold another version than the one it holds.
    merges = []
    with torch.inference_mode():
        for version in ("base", versions[-1]):
            started = time.perf_counter()
            with models.slot.weights_for(version):
                fast.prepare(models.model, version)
            merges.append(time.perf_counter() - started)

    since = METER.reading()
    per_threads: dict[str, Any] = {}
    for threads in cfg.serve_threads:
        with torch_threads(threads):
            for path in PATHS:  # warm-up of each path at this thread count
                _answer(models, prompts[0], sampling, path, fast, compiled)
            speeds: dict[str, list[float]] = {path: [] for path in PATHS}
            texts: dict[str, list[str]] = {path: [] for path in PATHS}
            for rep in range(cfg.decode_reps):
                for i, prompt in enumerate(prompts):
                    turn = (rep + i) % len(PATHS)
                    for path in PATHS[turn:] + PATHS[:turn]:
                        speed, text = _answer(models, prompt, sampling, path, fast, compiled)
                        speeds[path].append(speed)
                        if rep == 0:
                            texts[path].append(text)
            medians = {path: statistics.median(speeds[path]) for path in PATHS}
            log.info(
                "decode, %d threads: plain %.1f tok/s, merged %.1f tok/s, fast (compiled) %.1f tok/s (%.2fx)",
                threads, medians["plain"], medians["merged"], medians["fast"], medians["fast"] / medians["plain"],
            )
            per_threads[str(threads)] = {
                **{f"{path}_tokens_per_s": medians[path] for path in PATHS},
                "ratio_fast_over_plain": ratio(medians["fast"], medians["plain"]),
                "ratio_merged_over_plain": ratio(medians["merged"], medians["plain"]),
                **{f"{path}_samples": speeds[path] for path in PATHS},
                "texts": texts,
            }
    models.fast = fast
    fast.compiled = compiled
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
        "compiled_bucket": bucket,
        "compile_s": compile_s,
        "per_threads": per_threads,
        "best_fast_tokens_per_s": best["fast_tokens_per_s"],
        "best_merged_tokens_per_s": max(row["merged_tokens_per_s"] for row in per_threads.values()),
        "best_plain_tokens_per_s": max(row["plain_tokens_per_s"] for row in per_threads.values()),
        "identical_share": identical,
        "mean_shared_prefix_fraction": prefix,
        "merge_s": merges,
        "foreign_cpu_cores": foreign,
    }
