"""Benchmark ``answers``: p50/p95 latency of complete greedy answers, idle vs during a retrain.

Serving thread counts are interleaved answer by answer (ABBA), so all see the same machine
state. Busy answers are those that started and ended while the trainer process reported
"training"; answers keep coming until the round ends, and another round (on new judgements) is
queued if some thread count has fewer than ``busy_answers``. (The quick run stops answering
once it has ``busy_answers`` and lets the round finish alone.) Each answer also records the cores
other processes used meanwhile, so figures from answers nothing else competed with are reported
beside the raw ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..core.config import Settings
from ..versions.registry import Registry
from ..feedback.records import Sampling
from .plan import QUESTION, BenchConfig
from .judgements import write_judgements
from .rounds import PendingRound, poll_round, round_figures, start_round, wait_round
from .figures import fmt, mean_or_none, ratio, summarise
from .timing import METER, torch_threads
from .workspace import serving

if TYPE_CHECKING:
    from ..serving.manager import ModelManager
    from ..training.process import TrainerClient

log = logging.getLogger(__name__)

# An answer counts as "quiet" when processes other than this one and its trainer used less than
# this many cores meanwhile; the machine may be shared, and 2-thread answers suffer badly from it.
QUIET_CORES = 0.2


@dataclass
class AnswerSample:
    """One complete answer: thread count, latency, tokens written, version, idle or busy."""

    threads: int
    seconds: float
    new_tokens: int
    version: str
    phase: str
    foreign_cpu_cores: float | None = None  # cores other processes used meanwhile


def timed_answer(models: "ModelManager", sampling: Sampling, threads: int, phase: str) -> AnswerSample:
    """Answer ``QUESTION`` once with ``threads`` torch threads; time the whole generate call."""
    import torch

    torch.set_num_threads(threads)
    since = METER.reading()
    started = time.perf_counter()
    answer = models.generate(QUESTION, sampling=sampling)
    seconds = time.perf_counter() - started
    sample = AnswerSample(threads, seconds, answer.new_tokens, answer.version, phase, METER.foreign_cores(since))
    log.info(
        "%s answer (%d thread(s)): %.2f s, %d tokens, other processes %s cores",
        phase, threads, seconds, answer.new_tokens, fmt(sample.foreign_cpu_cores, digits=2),
    )
    return sample


def is_quiet(sample: AnswerSample) -> bool:
    """Whether nothing outside the benchmark competed for the CPU during the answer."""
    return sample.foreign_cpu_cores is None or sample.foreign_cpu_cores < QUIET_CORES


def thread_order(threads: Sequence[int], i: int) -> list[int]:
    """ABBA order, so neither thread count always runs first after a change of state."""
    return list(threads) if i % 2 == 0 else list(reversed(threads))


def _per_threads(n: int, idle: list[AnswerSample], busy: list[AnswerSample], default_threads: int) -> dict[str, Any]:
    """The figures of one serving thread count."""
    mine_idle = [s for s in idle if s.threads == n]
    mine_busy = [s for s in busy if s.threads == n]
    idle_sum = summarise([s.seconds for s in mine_idle])
    busy_sum = summarise([s.seconds for s in mine_busy])
    idle_quiet = summarise([s.seconds for s in mine_idle if is_quiet(s)])
    busy_quiet = summarise([s.seconds for s in mine_busy if is_quiet(s)])
    return {
        "threads": n,
        "is_torch_default": n == default_threads,  # what --serve-threads 0 gives
        "idle": idle_sum,
        "busy": busy_sum,
        "p95_ratio_busy_over_idle": ratio(busy_sum["p95_s"], idle_sum["p95_s"]),
        "p50_ratio_busy_over_idle": ratio(busy_sum["p50_s"], idle_sum["p50_s"]),
        "idle_foreign_cpu_cores": mean_or_none([s.foreign_cpu_cores for s in mine_idle]),
        "busy_foreign_cpu_cores": mean_or_none([s.foreign_cpu_cores for s in mine_busy]),
        # The same figures from answers during which nothing else competed for the CPU.
        "idle_quiet": idle_quiet,
        "busy_quiet": busy_quiet,
        "p95_ratio_busy_over_idle_quiet": ratio(busy_quiet["p95_s"], idle_quiet["p95_s"]),
        "new_tokens": sorted({s.new_tokens for s in mine_idle + mine_busy}),
    }


def _counts(samples: list[AnswerSample], threads: Sequence[int]) -> dict[int, int]:
    """Answers per serving thread count."""
    return {n: sum(1 for s in samples if s.threads == n) for n in threads}


def _answer_while_training(
    cfg: BenchConfig,
    models: "ModelManager",
    sampling: Sampling,
    trainer: "TrainerClient",
    pending: PendingRound,
    busy: list[AnswerSample],
) -> tuple[str, int]:
    """Time answers (appended to ``busy``) while the round runs; returns its version and the answers discarded.

    An answer during which the round ended was not fully busy and is discarded. Unless
    ``cfg.answer_whole_round``, answering stops once every thread count has ``busy_answers``,
    and the round then finishes alone.

    Raises:
        TimeoutError: the round did not end within ``cfg.round_timeout_s``.
    """
    discarded = 0
    i = 0
    version = poll_round(trainer, pending)
    while version is None:
        if not cfg.answer_whole_round and min(_counts(busy, cfg.serve_threads).values()) >= cfg.busy_answers:
            left_s = max(0.0, cfg.round_timeout_s - (time.perf_counter() - pending.started))
            version, _ = wait_round(trainer, pending, left_s)
            break
        for n in thread_order(cfg.serve_threads, i):
            sample = timed_answer(models, sampling, n, "busy")
            version = poll_round(trainer, pending)
            if version is not None:  # the round ended during this answer: not fully busy
                discarded += 1
                break
            busy.append(sample)
        i += 1
        if time.perf_counter() - pending.started > cfg.round_timeout_s:
            raise TimeoutError("the training round did not finish in time")
    return version, discarded


def bench_answers(
    cfg: BenchConfig, settings: Settings, base: Path, tokenizer, trainer: "TrainerClient"
) -> dict[str, Any]:
    """Benchmark ``answers`` (see the module docstring), in the trainer's workspace ``settings``."""
    import torch

    default_threads = torch.get_num_threads()
    registry = Registry(settings.checkpoints_dir)
    # Greedy decoding, so every answer to the same question has the same length and latencies
    # compare like for like.
    sampling = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens)
    threads = cfg.serve_threads
    idle: list[AnswerSample] = []
    busy: list[AnswerSample] = []
    rounds: list[dict[str, Any]] = []
    discarded = 0
    with serving(settings, base, tokenizer) as models, torch_threads(default_threads):
        models.activity.subscribe(trainer.answering)  # as the app does: few trainer threads while answering
        for n in threads:  # warm-up: the first generate call of a thread count is slower
            timed_answer(models, sampling, n, "warmup")
        for i in range(cfg.idle_answers):
            for n in thread_order(threads, i):
                idle.append(timed_answer(models, sampling, n, "idle"))

        offset = cfg.retrain_judgements  # continue through the items after the retrain benchmark's
        for round_no in range(cfg.max_busy_rounds):
            write_judgements(settings, tokenizer, cfg.retrain_judgements, start=offset)
            offset += cfg.retrain_judgements
            log.info("busy: requesting round %d on %d new judgements", round_no + 1, cfg.retrain_judgements)
            pending = start_round(trainer, registry)
            version, discarded_now = _answer_while_training(cfg, models, sampling, trainer, pending, busy)
            discarded += discarded_now
            rounds.append(round_figures(registry, pending, version, None))
            log.info("busy: round %d published %s", round_no + 1, version)
            counts = _counts(busy, threads)
            if min(counts.values()) >= cfg.busy_answers:
                break
            log.info("busy: only %s answers per thread count so far; queuing another round", counts)

    return {
        "question": QUESTION,
        "max_new_tokens": cfg.max_new_tokens,
        "torch_default_threads": default_threads,
        "trainer_threads": settings.trainer_threads,
        "per_threads": {str(n): _per_threads(n, idle, busy, default_threads) for n in threads},
        "busy_rounds": rounds,
        "discarded_answers": discarded,
        "answered_whole_round": cfg.answer_whole_round,
        "quiet_threshold_cores": QUIET_CORES,
        "samples": [asdict(s) for s in idle + busy],
    }
