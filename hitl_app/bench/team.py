"""Benchmark ``team``: team review at scale, without a model.

Four figures, each with its goal, on stores built here (seeded, with the real record classes):

1. **Import** of a 100k-row JSONL question set (``write_question_set``: distinct patient-style
   questions with reference answers, about 1% repeats and a few questions the input guard
   refuses, some with identifiers to redact): ``import_questions(path, "bench",
   ReviewQueue(QueueStore(dir)), SafetyChecker(), redact=True)``, end to end. It runs in a fresh
   subprocess (``python -m hitl_app.bench.team --import-child SET DIR``) so that its peak memory
   is its own: the process's max RSS (``getrusage`` ``ru_maxrss``) after the call, minus its RSS
   (``VmRSS``) just before it, with ``datasets`` and the app's modules already imported and the
   ``SafetyChecker`` built. Goal: <= 30 s.
2. **Next** latency, p50 and p99, with the 100k items queued and 10k judgements already made
   (``build_next_store``: the first 5k items in queue order judged by 2 reviewers each, with their
   generations and claims, written in bulk with ``append_many``), and candidates pre-generated
   (``Generation`` with ``item_id``, version "base") for the items after them. The service is the
   real ``HITLService`` over those stores with stand-ins for the model (``NoModel``: its
   ``generate`` raises) and the trainer, ``--reviews-per-item 2`` and ``--pregenerate 0``. Each of
   the timed calls is ``next_item`` as the service does it (sync, peek, claim under the queue lock
   with an fsync, the reply); between calls the reviewer judges the item they got (one durable
   append, not timed), so every call takes a new slot. Reviewers take turns. The benchmark fails
   if a call comes back without a pre-generated generation, or stores a generation. Goal: p99 <= 50 ms.
3. **Agreement** over 100k judgements (``build_judged_store``: 50k items x 2 reviewers from a
   pool of 10, 2 candidates each, a designed mix of agreeing and disagreeing accepts, rejects and
   rankings, see ``SCENARIOS``): ``Curation.agreement()`` cold (first call: the ledger and queue are
   already read, as in the running app; the read is reported apart) and cached (second call).
   Goal: <= 2 s cold.
4. **Export** of the same 100k judgements: ``Curation.export("dpo", out)`` and ``("raw", out)``,
   each end to end with its Parquet, JSONL and card (the default filter: held-out judgements
   are left out, as the app does). Goal: <= 20 s each.

Building the stores is timed apart (``build_s``) and is part of no figure. Everything lives in a
temporary folder that is removed at the end.
"""

from __future__ import annotations

import gc
import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from ..core.config import DEFAULT_SYSTEM_PROMPT, Settings
from ..feedback.queue import ReviewQueue
from ..feedback.queue_records import Claim
from ..feedback.records import BASE_VERSION, Feedback, Generation
from ..feedback.store import QUEUE_FILE, FeedbackStore, QueueStore
from .figures import fmt, percentile
from .plan import BenchConfig
from .timing import METER

log = logging.getLogger(__name__)
from .team_stores import (
    IMPORTER, REVIEWS_PER_ITEM, SAMPLING, build_judged_store, build_next_store, reviewer_names, write_question_set,
)


IMPORT_TIMEOUT_S = 900.0


GOALS = {"import_s": 30.0, "next_p99_s": 0.05, "agreement_cold_s": 2.0, "export_s": 20.0}


def import_question_set(set_path: Path, feedback_dir: Path) -> dict[str, Any]:
    """Import the set into a fresh queue in ``feedback_dir`` as the app does; time it, in this process.

    Returns:
        ``wall_s`` (``import_questions`` alone), ``imported``, ``duplicates``, ``refused``,
        ``redactions``, ``safety_init_s`` (building the ``SafetyChecker``, not counted),
        ``peak_rss_mb`` (this process's max RSS afterwards), ``rss_before_mb`` (its RSS just
        before the call), ``peak_rss_delta_mb`` (their difference) and ``foreign_cores``.
    """
    import datasets  # noqa: F401 - loaded before the baseline: reading the set needs it, the app has it

    from ..safety.checker import SafetyChecker
    from ..service.importing import import_questions

    started = time.perf_counter()
    safety = SafetyChecker()
    safety.check_input("warm up")  # any lazy set-up of the guard happens before the clock starts
    safety_init_s = time.perf_counter() - started
    queue = ReviewQueue(QueueStore(feedback_dir))
    gc.collect()
    rss_before = _rss_mb()
    reading = METER.reading()
    started = time.perf_counter()
    report = import_questions(set_path, IMPORTER, queue, safety, redact=True)
    wall = time.perf_counter() - started
    foreign = METER.foreign_cores(reading)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "wall_s": wall, "imported": report.imported, "duplicates": report.duplicates, "refused": report.refused,
        "redactions": report.redactions, "queue_size": queue.size, "safety_init_s": safety_init_s,
        "peak_rss_mb": peak, "rss_before_mb": rss_before, "peak_rss_delta_mb": peak - rss_before,
        "foreign_cores": foreign,
    }


def _rss_mb() -> float:
    """This process's resident set size now (VmRSS), in MiB; its max RSS where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_in_subprocess(set_path: Path, feedback_dir: Path) -> dict[str, Any]:
    """``import_question_set`` in a fresh Python process, so its peak memory is the import's own.

    Raises:
        RuntimeError: the child failed or printed no result.
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hitl_app.bench.team", "--import-child", str(set_path), str(feedback_dir)],
        capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the import subprocess failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    result["subprocess_s"] = time.perf_counter() - started
    return result


# ----- records -----


class NoModel:
    """What the queue's path reads of the model manager, and a ``generate`` that refuses to run:
    a timed Next that needed the model would measure something else."""

    version = BASE_VERSION
    sampling = SAMPLING
    system_prompt = DEFAULT_SYSTEM_PROMPT

    def __init__(self) -> None:
        from ..serving.activity import AnswerActivity

        self.activity = AnswerActivity()

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Never called in the benchmark.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError("the team benchmark's Next called the model: an item had no pre-generated candidates")


def team_service(feedback_dir: Path, checkpoints_dir: Path):
    """The real ``HITLService`` over the stores in ``feedback_dir``, with stand-ins for the model and trainer."""
    from ..service.service import HITLService
    from ..versions.registry import Registry

    settings = Settings(feedback_dir=feedback_dir, checkpoints_dir=checkpoints_dir,
                        reviews_per_item=REVIEWS_PER_ITEM, pregenerate=0)
    return HITLService(settings=settings, store=FeedbackStore(feedback_dir), models=NoModel(),
                       registry=Registry(checkpoints_dir), trainer=SimpleNamespace(request=lambda by: False))


def time_next(service, calls: int, reviewers: int, pregenerated: Iterable[str]) -> dict[str, Any]:
    """Time ``calls`` Next calls, reviewers taking turns; each reviewer judges their item before their next call.

    Raises:
        RuntimeError: a call returned no item, candidates that were not pre-generated, or stored a
            generation; or a call did not take a new slot.
    """
    from ..service.base import Caller

    names = reviewer_names(reviewers)
    ready = set(pregenerated)
    generations_before = service.ledger.generations_total
    queue_cursor = service.queue.store.path.stat().st_size
    durations = []
    items = set()
    reading = METER.reading()
    for n in range(calls):
        caller = Caller(names[n % reviewers])
        started = time.perf_counter()
        reply = service.next_item(caller)
        durations.append(time.perf_counter() - started)
        if reply.item_id is None or reply.generation_id not in ready or reply.version != BASE_VERSION:
            raise RuntimeError(f"Next {n} for {caller.username} did not return a pre-generated item: {reply.item_id}, {reply.generation_id}")
        items.add(reply.item_id)
        # The reviewer's judgement (not timed): their next Next takes a new item.
        service.store.append(Feedback(reviewer=caller.username, generation_id=reply.generation_id, action="accept"))
    foreign = METER.foreign_cores(reading)
    stored = service.ledger.generations_total - generations_before
    claims = sum(isinstance(r, Claim) for _, r in service.queue.store.read(queue_cursor).records)
    if stored or claims != calls:
        raise RuntimeError(f"Next stored {stored} generation(s) and {claims} claim(s) in {calls} calls")
    return {
        "calls": calls, "reviewers": reviewers, "items": len(items), "claims": claims,
        "p50_s": percentile(durations, 50), "p99_s": percentile(durations, 99), "max_s": max(durations),
        "mean_s": sum(durations) / len(durations), "foreign_cores": foreign,
    }


def make_curation(feedback_dir: Path, checkpoints_dir: Path):
    """A ``Curation`` over the stores, with the app's default threshold and hold-out (not yet read)."""
    from ..feedback.ledger import FeedbackLedger
    from ..service.curation import Curation
    from ..versions.registry import Registry

    settings = Settings(feedback_dir=feedback_dir, checkpoints_dir=checkpoints_dir, reviews_per_item=REVIEWS_PER_ITEM)
    return Curation(FeedbackLedger(FeedbackStore(feedback_dir)), ReviewQueue(QueueStore(feedback_dir), REVIEWS_PER_ITEM),
                    Registry(checkpoints_dir), REVIEWS_PER_ITEM, settings.consensus_threshold, settings.holdout_fraction)


# ----- the benchmark -----


def _timed(fn):
    reading = METER.reading()
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started, METER.foreign_cores(reading)


def bench_team(cfg: BenchConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Benchmark ``team`` (see the module docstring).

    Args:
        cfg: the sizes (``team_*``).
        workdir: a folder to work in (a temporary one by default); removed at the end.

    Returns:
        ``sizes``, ``build_s`` (store building, per step), and ``import``, ``next``, ``agreement``
        and ``export``: each figure with its ``goal_s`` and ``meets_goal``.
    """
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="hitl-bench-team-"))
    root.mkdir(parents=True, exist_ok=True)
    sizes = {"questions": cfg.team_questions, "judgements_before_next": cfg.team_next_judgements,
             "next_calls": cfg.team_next_calls, "next_reviewers": cfg.team_next_reviewers,
             "agreement_items": cfg.team_agreement_items, "agreement_reviewers": cfg.team_agreement_reviewers}
    results: dict[str, Any] = {"sizes": sizes, "build_s": {}}
    build = results["build_s"]
    try:
        # 1. Import, in a fresh process.
        set_path = root / "questions.jsonl"
        written, build["question_set_s"], _ = _timed(lambda: write_question_set(set_path, cfg.team_questions))
        next_dir, judged_dir, checkpoints = root / "next" / "feedback", root / "judged" / "feedback", root / "checkpoints"
        imported = import_in_subprocess(set_path, next_dir)
        imported.update(written=written, goal_s=GOALS["import_s"], meets_goal=imported["wall_s"] <= GOALS["import_s"],
                        memory_method="max RSS (getrusage ru_maxrss) of a fresh subprocess after the call, "
                                      "minus its RSS (VmRSS) just before it")
        results["import"] = imported
        log.info("team: import of %d questions: %.2f s (goal <= %.0f s), peak RSS +%.0f MB; %d imported, "
                 "%d duplicates, %d refused", written["rows"], imported["wall_s"], GOALS["import_s"],
                 imported["peak_rss_delta_mb"], imported["imported"], imported["duplicates"], imported["refused"])
        judged_dir.mkdir(parents=True)
        shutil.copy(next_dir / QUEUE_FILE, judged_dir / QUEUE_FILE)  # the imported queue, before any claim

        # 2. Next.
        pregenerate = 2 * cfg.team_next_calls + cfg.team_next_reviewers
        made, build["next_store_s"], _ = _timed(
            lambda: build_next_store(next_dir, cfg.team_next_judgements, pregenerate, cfg.team_next_reviewers))
        service, build["next_service_s"], _ = _timed(lambda: team_service(next_dir, checkpoints))
        try:
            queue_state = {"queue_size": service.queue.size, "full_items": service.queue.full,
                           "judgements": len(service.ledger.judgements()), "pregenerated": len(made["pregenerated"])}
            gc.collect()
            timed = time_next(service, cfg.team_next_calls, cfg.team_next_reviewers, made["pregenerated"])
        finally:
            service.close()
            del service
            gc.collect()
        timed.update(queue_state, goal_p99_s=GOALS["next_p99_s"], meets_goal=timed["p99_s"] <= GOALS["next_p99_s"])
        results["next"] = timed
        log.info("team: Next with %d queued, %d judgements: p50 %.1f ms, p99 %.1f ms (goal <= %.0f ms), max %.1f ms",
                 queue_state["queue_size"], queue_state["judgements"], 1e3 * timed["p50_s"], 1e3 * timed["p99_s"],
                 1e3 * GOALS["next_p99_s"], 1e3 * timed["max_s"])

        # 3. Agreement, 4. export.
        judged, build["judged_store_s"], _ = _timed(
            lambda: build_judged_store(judged_dir, cfg.team_agreement_items, cfg.team_agreement_reviewers))
        curation = make_curation(judged_dir, checkpoints)
        _, read_s, _ = _timed(lambda: (curation.ledger.refresh(), curation.queue.refresh()))
        gc.collect()
        report, cold_s, cold_foreign = _timed(curation.agreement)
        again, cached_s, _ = _timed(curation.agreement)
        if again is not report or report.judgements != judged["judgements"]:
            raise RuntimeError(f"agreement covered {report.judgements} of {judged['judgements']} judgements, or was not cached")
        results["agreement"] = {
            "items": report.items, "judgements": report.judgements, "ledger_and_queue_read_s": read_s,
            "cold_s": cold_s, "cached_s": cached_s, "foreign_cores": cold_foreign, "mix": judged["mix"],
            "alpha_nominal": report.team.alpha_nominal, "alpha_ordinal": report.team.alpha_ordinal,
            "units_nominal": report.team.units_nominal, "units_ordinal": report.team.units_ordinal,
            "pairs": len(report.pairs), "goal_s": GOALS["agreement_cold_s"], "meets_goal": cold_s <= GOALS["agreement_cold_s"],
        }
        log.info("team: agreement over %d judgements: cold %.2f s (goal <= %.0f s), cached %.4f s; alpha nominal %s, "
                 "ordinal %s", report.judgements, cold_s, GOALS["agreement_cold_s"], cached_s,
                 fmt(report.team.alpha_nominal), fmt(report.team.alpha_ordinal))
        export: dict[str, Any] = {"judgements": report.judgements, "goal_s": GOALS["export_s"]}
        for kind in ("dpo", "raw"):
            out = root / f"export-{kind}"
            gc.collect()
            summary, wall, foreign = _timed(lambda: curation.export(kind, out))
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
            export[kind] = {"wall_s": wall, "rows": summary.rows, "judgements": summary.judgements,
                            "held_out_rows": summary.held_out_rows, "megabytes": round(size, 1), "foreign_cores": foreign,
                            "meets_goal": wall <= GOALS["export_s"]}
            log.info("team: export %s of %d judgements: %.2f s (goal <= %.0f s), %d rows, %.0f MB", kind,
                     report.judgements, wall, GOALS["export_s"], summary.rows, size)
            shutil.rmtree(out, ignore_errors=True)
        export["meets_goal"] = all(export[k]["meets_goal"] for k in ("dpo", "raw"))
        results["export"] = export
        del curation
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def _child(argv: list[str]) -> int:
    """``--import-child SET DIR``: run ``import_question_set`` and print its result as one JSON line."""
    if len(argv) != 3 or argv[0] != "--import-child":
        print("usage: python -m hitl_app.bench.team --import-child SET DIR", file=sys.stderr)
        return 2
    from ..core.console import configure

    configure("warning")  # as the app: no progress bars
    result = import_question_set(Path(argv[1]), Path(argv[2]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
