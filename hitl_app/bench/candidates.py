"""Benchmark ``candidates``: K sampled candidates in one batched ``generate`` call vs K single calls.

The app samples its K candidates per question in one call (``ModelManager.generate(prompt, k=K)``,
``num_return_sequences=K``). This compares, on the same question and with the app's sampling
(its temperature and top-p; a fixed ``max_new_tokens``):

- **batched**: one ``generate(prompt, k=K)`` call;
- **sequential**: K calls of ``generate(prompt, k=1)``, timed together.

Throughput is answer tokens per wall second. A candidate's answer tokens are its new tokens up to,
not including, its first EOS: read from the output tensor of each ``generate`` call, and checked
against ``Answer.new_tokens``. After a warm-up, batched and sequential runs alternate in pairs
(ABBA order), all in one run, with all cores as torch threads (what the app serves with while
the trainer is idle).

Where the app serves from the fast path (the bf16 merged copy), the pairs run twice: first
uncompiled, as answers decode until compiled decoding is ready, then with compiled decoding for
single answers and for K rows, as the app serves with ``--candidates K`` once it is ready. The
headline figures are the compiled ones, the way the app serves; ``uncompiled`` keeps the others.

Sampled candidates have different lengths, and a batch keeps stepping until its longest one ends,
so part of its work is padding: each mode reports ``padding_share``, the share of computed token
slots that are not answer tokens. The same pairs are also run at fixed length, every candidate
forced to ``max_new_tokens`` (``min_new_tokens`` on this benchmark's own model instance:
``Sampling`` has no such field), which shows what batching gives without that waste.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from ..feedback.records import Sampling
from .adapters import publish_random_adapters
from .plan import QUESTION, BenchConfig
from .figures import fmt, mean_or_none, median_or_none, ratio, spread, summarise
from .timing import METER, torch_threads
from .workspace import app_sampling, make_settings, serving

if TYPE_CHECKING:
    from ..serving.manager import ModelManager

log = logging.getLogger(__name__)

Mode = Literal["batched", "sequential"]
Length = Literal["natural", "fixed"]
Decoding = Literal["uncompiled", "compiled"]


@dataclass
class CandidateRun:
    """K candidates for ``QUESTION``, made in one batched call or in K single calls."""

    mode: Mode
    length: Length
    pair: int  # the repeat this run belongs to
    seconds: float  # wall time of the call, or of the K calls together
    candidate_tokens: list[int]  # answer tokens of each candidate (up to its first EOS)
    decode_steps: list[int]  # generate steps of each call: a batch runs as long as its longest candidate
    reported_tokens: int  # what Answer.new_tokens said, summed over the calls
    decoding: Decoding = "uncompiled"  # how every call of the run decoded (checked from the outputs)
    new_tokens: int = 0
    tokens_per_s: float = 0.0
    padding_share: float = 0.0  # computed token slots that are not answer tokens (EOS, padding)
    foreign_cpu_cores: float | None = None  # cores other processes used meanwhile

    def __post_init__(self) -> None:
        self.new_tokens = sum(self.candidate_tokens)
        self.tokens_per_s = self.new_tokens / self.seconds if self.seconds > 0 else 0.0
        # A batched call computes K slots per step; a single call one slot per step.
        width = len(self.candidate_tokens) if self.mode == "batched" else 1
        slots = width * sum(self.decode_steps)
        self.padding_share = 1.0 - self.new_tokens / slots if slots else 0.0


Record = tuple[list[int], int, Decoding]  # each row's answer tokens, the steps run, how it decoded


def record_outputs(models: "ModelManager", records: list[Record] | None = None) -> list[Record]:
    """Record, for every ``generate`` of ``models``' models, each row's answer tokens and the steps run.

    ``ModelManager.generate`` reports only the total of its candidates' tokens, so each model's
    ``generate`` is shadowed on this one instance to read its output tensor; nothing else changes.
    Call it again with the same ``records`` once compiled decoding exists, to add its model.
    """
    records = [] if records is None else records
    stops = _stop_ids(models)
    for model, decoding in _generating_models(models):
        if getattr(vars(model).get("generate"), "shadows", None) is not model:
            _shadow_generate(model, decoding, records, stops)
    return records


def _shadow_generate(model, decoding: Decoding, records: list[Record], stops: set[int]) -> None:
    # The class's method: the compiled twin, a deep copy of the merged copy, carries the copy's wrapper.
    original = type(model).generate.__get__(model)

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        prompt_len = kwargs["input_ids"].shape[1]
        rows = out[:, prompt_len:].tolist()  # (K, steps)
        records.append(([_answer_length(row, stops) for row in rows], len(rows[0]) if rows else 0, decoding))
        return out

    generate.shadows = model
    model.generate = generate  # instance attribute: the serving path calls this model's generate


def _generating_models(models: "ModelManager") -> list[tuple[Any, Decoding]]:
    """The models whose ``generate`` writes answers: the fast path's merged copy if there is one
    (and its compiled twin once compiled decoding exists), else the PEFT model."""
    if models.fast is None:
        return [(models.model, "uncompiled")]
    found: list[tuple[Any, Decoding]] = [(models.fast.model, "uncompiled")]
    if models.fast.compiled is not None:
        found.append((models.fast.compiled.twin, "compiled"))
    return found


def _stop_ids(models: "ModelManager") -> set[int]:
    """Token ids that end an answer: EOS (one or several) and padding, which follows a finished row."""
    ids = {models.tokenizer.eos_token_id, models.tokenizer.pad_token_id}
    configured = getattr(models.model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def _answer_length(row: list[int], stops: set[int]) -> int:
    """Tokens before the first stop token (the whole row if it never stopped)."""
    return next((i for i, token in enumerate(row) if token in stops), len(row))


@contextlib.contextmanager
def forced_length(models: "ModelManager", length: Length, max_new_tokens: int) -> Iterator[None]:
    """Run the block with every candidate forced to ``max_new_tokens`` when ``length`` is fixed.

    ``generate`` merges its arguments over the model's generation config, and ``Sampling`` passes
    no ``min_new_tokens``, so setting it on this instance's config suppresses EOS until the end.
    """
    configs = [model.generation_config for model, _ in _generating_models(models)]
    previous = [config.min_new_tokens for config in configs]
    if length == "fixed":
        for config in configs:
            config.min_new_tokens = max_new_tokens
    try:
        yield
    finally:
        for config, value in zip(configs, previous):
            config.min_new_tokens = value


def _run(
    models: "ModelManager", outputs: list, sampling: Sampling, k: int, mode: Mode, length: Length, pair: int, seed: int
) -> CandidateRun:
    """One batched call, or ``k`` single calls, timed together."""
    import torch

    torch.manual_seed(seed)  # reproducible samples; both modes of a pair start from the same state
    calls = 1 if mode == "batched" else k
    seen = len(outputs)
    since = METER.reading()
    with forced_length(models, length, sampling.max_new_tokens):
        started = time.perf_counter()
        answers = [models.generate(QUESTION, k=k if mode == "batched" else 1, sampling=sampling) for _ in range(calls)]
        seconds = time.perf_counter() - started
    mine = outputs[seen:]
    decodings = {decoding for _, _, decoding in mine}
    if len(decodings) != 1:
        raise RuntimeError(f"candidates {mode} {length} (pair {pair}): calls decoded {sorted(decodings)}")
    run = CandidateRun(
        mode=mode,
        length=length,
        pair=pair,
        seconds=seconds,
        candidate_tokens=[n for lengths, _, _ in mine for n in lengths],
        decode_steps=[steps for _, steps, _ in mine],
        reported_tokens=sum(a.new_tokens for a in answers),
        decoding=decodings.pop(),
        foreign_cpu_cores=METER.foreign_cores(since),
    )
    log.info(
        "candidates %s %s %s (pair %d): %.2f s, %d tokens %s, %.1f tokens/s, padding %.0f%%, other processes %s cores",
        run.decoding, mode, length, pair, seconds, run.new_tokens, run.candidate_tokens, run.tokens_per_s,
        run.padding_share * 100, fmt(run.foreign_cpu_cores, digits=2),
    )
    return run


def _mode_figures(runs: list[CandidateRun]) -> dict[str, Any]:
    """Throughput, wall time, tokens and padding of one mode's runs."""
    return {
        "tokens_per_s": spread([r.tokens_per_s for r in runs]),
        "wall": summarise([r.seconds for r in runs]),
        "new_tokens": spread([r.new_tokens for r in runs]),
        "padding_share": spread([r.padding_share for r in runs]),
        "candidate_tokens": [r.candidate_tokens for r in runs],
    }


def _length_figures(runs: list[CandidateRun]) -> dict[str, Any]:
    """Batched vs sequential for one length mode: each mode's figures and their ratios."""
    batched = {r.pair: r for r in runs if r.mode == "batched"}
    sequential = {r.pair: r for r in runs if r.mode == "sequential"}
    pairs = sorted(batched.keys() & sequential.keys())
    b_figs = _mode_figures(list(batched.values()))
    s_figs = _mode_figures(list(sequential.values()))
    return {
        "batched": b_figs,
        "sequential": s_figs,
        # The goal's figure: median batched throughput over median sequential throughput.
        "throughput_ratio_batched_over_sequential": ratio(
            b_figs["tokens_per_s"]["median"], s_figs["tokens_per_s"]["median"]
        ),
        "median_pair_throughput_ratio": median_or_none(
            [ratio(batched[p].tokens_per_s, sequential[p].tokens_per_s) for p in pairs]
        ),
        # How much sooner K candidates are ready; sampled lengths differ, so not tokens-matched.
        "median_wall_ratio_sequential_over_batched": median_or_none(
            [ratio(sequential[p].seconds, batched[p].seconds) for p in pairs]
        ),
    }


def _pairs(
    models: "ModelManager", outputs: list[Record], sampling: Sampling, k: int, cfg: BenchConfig, seed: int
) -> list[CandidateRun]:
    """A warm-up of each batch shape, then ``cfg.candidates_pairs`` interleaved pairs per length mode."""
    # The first call of each batch shape is slower (allocations, kernel selection).
    for width in (k, 1):
        models.generate(QUESTION, k=width, sampling=sampling)
    runs = []
    for pair in range(cfg.candidates_pairs):
        order: tuple[Mode, ...] = ("batched", "sequential") if pair % 2 == 0 else ("sequential", "batched")
        for length in ("natural", "fixed"):
            for mode in order:
                runs.append(_run(models, outputs, sampling, k, mode, length, pair, seed + 1 + pair))
    return runs


def _compile(models: "ModelManager", sampling: Sampling, k: int) -> dict[str, Any]:
    """Compile decoding for single answers and K rows, in the bucket these answers use; wait for it."""
    from ..serving.compiled_decode import default_buckets

    bucket = default_buckets(sampling.max_new_tokens, models.context_length)[0]
    models.start_compiled_decoding((bucket,), rows=(1, k))
    compiled = models.fast.compiled
    if not compiled.wait():
        raise RuntimeError(f"compiled decoding failed to warm up: {compiled.error}")
    return {"bucket": bucket, "compile_s": {f"{rows} rows": compiled.compile_s[(bucket, rows)] for rows in (1, k)}}


def _figures(runs: list[CandidateRun], sampling: Sampling) -> dict[str, Any]:
    """Batched vs sequential at natural and at fixed length, for one way of decoding."""
    natural = _length_figures([r for r in runs if r.length == "natural"])
    fixed = _length_figures([r for r in runs if r.length == "fixed"])
    fixed_ok = all(n == sampling.max_new_tokens for r in runs if r.length == "fixed" for n in r.candidate_tokens)
    if not fixed_ok:
        log.warning("candidates: min_new_tokens did not force every fixed-length candidate to %d tokens", sampling.max_new_tokens)
    return {
        "natural": natural,
        "fixed_length": {**fixed, "forced_every_candidate": fixed_ok},
        "throughput_ratio": natural["throughput_ratio_batched_over_sequential"],
        "median_wall_ratio": natural["median_wall_ratio_sequential_over_batched"],
    }


def bench_candidates(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``candidates`` (see the module docstring), in its own workspace under ``root``."""
    settings = make_settings(root, base, cfg)
    k = cfg.candidates_k
    sampling = app_sampling(settings).model_copy(update={"max_new_tokens": cfg.candidates_max_new_tokens})
    # Serve a version, as the app does after its first round, so the LoRA layers run on every
    # token; B = 0 keeps the answers (and so their natural lengths) the base model's.
    publish_random_adapters(settings, base, count=1, b_std=0.0)
    threads = os.cpu_count() or 1
    compiling: dict[str, Any] | None = None
    with serving(settings, base, tokenizer, watch=False) as models, torch_threads(threads):
        outputs = record_outputs(models)
        log.info("candidates: K = %d, %d threads, serving %s, sampling %s", k, threads, models.version, sampling)
        runs = _pairs(models, outputs, sampling, k, cfg, settings.seed)
        if models.fast is not None and settings.compile_decode:
            compiling = _compile(models, sampling, k)
            record_outputs(models, outputs)
            runs += _pairs(models, outputs, sampling, k, cfg, settings.seed)
        served = models.version

    uncompiled = _figures([r for r in runs if r.decoding == "uncompiled"], sampling)
    compiled = _figures([r for r in runs if r.decoding == "compiled"], sampling) if compiling else None
    counts_ok = all(r.new_tokens == r.reported_tokens for r in runs)
    if not counts_ok:
        log.warning("candidates: answer tokens read from the outputs differ from Answer.new_tokens")
    return {
        "question": QUESTION,
        "k": k,
        "sampling": sampling.model_dump(),
        "max_new_tokens": sampling.max_new_tokens,
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "pairs": cfg.candidates_pairs,
        "version": served,
        "decoding": "compiled" if compiled else "uncompiled",  # of the headline figures, as the app serves
        **(compiled or uncompiled),
        "uncompiled": uncompiled if compiled else None,
        "compiling": compiling,
        "token_counts_match_answer": counts_ok,
        "foreign_cpu_cores": mean_or_none([r.foreign_cpu_cores for r in runs]),
        "samples": [asdict(r) for r in runs],
    }
