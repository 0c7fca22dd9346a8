"""Benchmark ``concurrency``: several clinicians asking at the same moment, against one asking in turn.

Each of ``concurrency_clients`` clients asks for ``concurrency_k`` sampled candidates at the same
moment (a barrier), through ``ModelManager.generate`` as the app's handlers do; the manager answers
the questions waiting together in one batched call (``serving/batching.py``). The same questions
are then asked by one client, one after the other. Rounds of both alternate in one run, with the
app's sampling and compiled decoding ready for single answers and the default candidates, as the
app serves once it has compiled.

Figures: aggregate answer tokens per second (all answer tokens over the wall time), p50/p95 latency
of a question (from its request to its answer), and how many batched calls answered the
concurrent questions.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluation.evalsets import load_eval_questions
from ..feedback.records import Sampling
from ..serving.compiled_decode import default_buckets
from .figures import percentile, ratio
from .plan import BenchConfig
from .timing import METER
from .workspace import app_sampling, make_settings, serving

if TYPE_CHECKING:
    from ..serving.manager import ModelManager

log = logging.getLogger(__name__)


def one_client(models: "ModelManager", questions: list[str], k: int, sampling: Sampling) -> tuple[float, list[float], int]:
    """One client asks the questions in turn: (wall seconds, latency of each, answer tokens)."""
    started = time.perf_counter()
    latencies, tokens = [], 0
    for question in questions:
        t = time.perf_counter()
        answer = models.generate(question, k=k, sampling=sampling)
        latencies.append(time.perf_counter() - t)
        tokens += answer.new_tokens
    return time.perf_counter() - started, latencies, tokens


def all_at_once(models: "ModelManager", questions: list[str], k: int, sampling: Sampling) -> tuple[float, list[float], int]:
    """One client per question, all asking at the same moment: (wall seconds, latency of each, answer tokens)."""
    barrier = threading.Barrier(len(questions) + 1)
    latencies: list[float] = [0.0] * len(questions)
    tokens: list[int] = [0] * len(questions)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        try:
            tokens[i] = models.generate(questions[i], k=k, sampling=sampling).new_tokens
        except BaseException as exc:  # re-raised below, in the benchmark's thread
            errors.append(exc)
        latencies[i] = time.perf_counter() - t

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(len(questions))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, latencies, sum(tokens)


def alternate(models, questions: list[str], k: int, sampling: Sampling, rounds: int) -> tuple[dict, dict]:
    """``rounds`` alternating rounds of one client in turn and all at once: the summary of each.

    Each summary: aggregate answer tokens/s (all tokens over all wall time), p50/p95 latency,
    answers and tokens.
    """
    figures: dict[str, dict[str, list]] = {name: {"wall": [], "latency": [], "tokens": []} for name in ("one", "many")}
    order = (("one", one_client), ("many", all_at_once))
    for rnd in range(rounds):
        for name, run in order if rnd % 2 == 0 else order[::-1]:
            wall, latencies, tokens = run(models, questions, k, sampling)
            figures[name]["wall"].append(wall)
            figures[name]["latency"] += latencies
            figures[name]["tokens"].append(tokens)

    def summary(f: dict[str, list]) -> dict[str, Any]:
        return {
            "tokens_per_s": sum(f["tokens"]) / sum(f["wall"]),
            "p50_latency_s": percentile(f["latency"], 50),
            "p95_latency_s": percentile(f["latency"], 95),
            "answers": len(f["latency"]),
            "tokens": sum(f["tokens"]),
        }

    return summary(figures["one"]), summary(figures["many"])


def bench_concurrency(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``concurrency`` (see the module docstring)."""
    settings = make_settings(root, base, cfg)
    k, clients = cfg.concurrency_k, cfg.concurrency_clients
    sampling = app_sampling(settings).model_copy(update={"max_new_tokens": cfg.concurrency_max_new_tokens})
    questions = [q.question for q in load_eval_questions()[:clients]]
    calls: list[int] = []
    with serving(settings, base, tokenizer, watch=False) as models:
        models.pending.max_batch = clients
        models.sampling = sampling  # the compiled shapes are built for the answers asked here
        # Single answers and k candidates in the first cache length: what the app compiles for these answers.
        buckets = default_buckets(sampling.max_new_tokens, models.context_length)
        shapes = [(buckets[0], 1), (buckets[0], k)] if buckets else []
        compiled = models.start_compiled_decoding(buckets, rows=(1, k), shapes=shapes)
        if compiled and not models.fast.compiled.wait():
            log.warning("concurrency: compiling failed (%s); answers decode uncompiled", models.fast.compiled.error)
        answer = models._answer

        def counted(batch):  # how many questions each batched call answered
            calls.append(len(batch))
            return answer(batch)

        models._answer = counted  # type: ignore[method-assign]
        one_client(models, questions[:1], k, sampling)  # warm-up: first-call costs
        all_at_once(models, questions, k, sampling)
        calls.clear()
        since = METER.reading()
        one, many = alternate(models, questions, k, sampling, cfg.concurrency_rounds)
        foreign = METER.foreign_cores(since)
        compiled_state = models.fast.compiled.describe().model_dump() if models.fast and models.fast.compiled else None
    batched_calls = [n for n in calls if n > 1]
    result = {
        "clients": clients,
        "candidates": k,
        "max_new_tokens": cfg.concurrency_max_new_tokens,
        "rounds": cfg.concurrency_rounds,
        "one_client": one,
        "all_at_once": many,
        "throughput_ratio": ratio(many["tokens_per_s"], one["tokens_per_s"]),
        "p95_ratio": ratio(many["p95_latency_s"], one["p95_latency_s"]),
        "questions_per_batched_call": batched_calls,
        "single_calls_while_concurrent": len(calls) - len(batched_calls) - cfg.concurrency_rounds * clients,
        "compiled": compiled_state,
        "foreign_cpu_cores": foreign,
    }
    log.info(
        "concurrency: %d clients x %d candidates at once: %.1f tok/s, p95 %.1f s; one client in turn: %.1f tok/s, "
        "p95 %.1f s; throughput %.2fx, p95 %.2fx; questions per batched call %s",
        clients, k, many["tokens_per_s"], many["p95_latency_s"], one["tokens_per_s"], one["p95_latency_s"],
        result["throughput_ratio"] or 0, result["p95_ratio"] or 0, batched_calls,
    )
    return result
