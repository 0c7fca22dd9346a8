"""``python -m hitl_app.bench``: parse the options, run the selected benchmarks, write and print results.

See the package docstring (``hitl_app/bench/__init__.py``) for what each benchmark measures.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

# Only light modules at import time; torch, transformers and the app's model code are imported
# by the benchmarks that need them.
from ..core.config import Settings
from ..core.console import configure
from . import __doc__ as PACKAGE_DOC
from .answers import bench_answers
from .candidates import bench_candidates
from .backends import bench_backends
from .concurrency import bench_concurrency
from .plan import BASE_DIR, BENCHMARKS, DEFAULT_OUT, BenchConfig
from .decode import bench_decode
from .report import evaluate_goals, print_table, report_rows
from .retrain import bench_retrain
from .reward import bench_reward
from .round_series import bench_rounds_replay
from .safety_cost import bench_safety
from .startup import bench_startup
from .store_read import bench_store
from .swap import bench_swap
from .phi_score import bench_phi
from .team import bench_team
from .teach import bench_teach
from .timing import METER, wait_until_quiet
from .workspace import make_settings

log = logging.getLogger("hitl_app.bench")


def run_step(results: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one benchmark; a failure is logged and recorded so the others still run.

    Garbage is collected afterwards, so the benchmark's models are freed before the next loads its own.
    """
    try:
        results[key] = fn()
    except Exception as exc:
        log.exception("%s benchmark failed", key)
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}
    gc.collect()


def run_with_trainer(cfg: BenchConfig, settings: Settings, base: Path, tokenizer, results: dict[str, Any]) -> None:
    """Start the trainer process in the ``settings`` workspace, run ``retrain`` and ``answers`` on it, stop it."""
    from ..training.process import TrainerClient

    trainer = TrainerClient(settings, str(base))
    try:
        trainer.start()
        pid = trainer._proc.pid if trainer._proc is not None else None  # read-only peek
        if pid is not None:
            METER.add(pid)  # the trainer's CPU is part of the benchmark, not foreign load
            # The trainer loads the base and calibrates its judge before its first request (a
            # minute or more on 2 cores); the app starts it long before the first round.
            log.info("trainer process settled after %.1f s", wait_until_quiet(pid, timeout_s=300.0))
        if cfg.runs("retrain"):
            run_step(results, "retrain", lambda: bench_retrain(cfg, settings, tokenizer, trainer))
        if cfg.runs("rounds"):
            run_step(results, "rounds", lambda: bench_rounds_replay(cfg, settings, tokenizer, trainer))
        if cfg.runs("answers"):
            run_step(results, "answers", lambda: bench_answers(cfg, settings, base, tokenizer, trainer))
    finally:
        trainer.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--only`` and ``--serve-threads`` come back as tuples.

    Raises:
        SystemExit: unknown options or benchmark names (argparse's usage error).
    """
    parser = argparse.ArgumentParser(
        prog="python -m hitl_app.bench",
        description=PACKAGE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run in about three minutes")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})")
    parser.add_argument("--serve-threads", default="1,2", help="comma-separated torch thread counts to serve with (default 1,2)")
    parser.add_argument("--trainer-threads", type=int, default=Settings.model_fields["trainer_threads"].default,
                        help="the trainer process's --trainer-threads (default: the app's default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args(argv)
    args.only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown or not args.only:
        parser.error(f"--only takes some of {', '.join(BENCHMARKS)} (got {', '.join(unknown) or 'nothing'})")
    try:
        args.serve_threads = tuple(int(n) for n in args.serve_threads.split(",") if n.strip())
    except ValueError:
        parser.error(f"--serve-threads takes comma-separated integers (got {args.serve_threads!r})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, write the JSON file and print the table; 1 if any failed."""
    args = parse_args(argv)
    configure("info")  # quiet third-party progress bars and warnings, as the app does
    import torch
    import transformers

    from ..serving.base_model import ensure_embedded_base, load_tokenizer

    cfg = BenchConfig.make(args.quick, args.serve_threads, args.trainer_threads, args.only)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": asdict(cfg),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(),
            "torch_default_threads": torch.get_num_threads(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        }
    }
    if os.getloadavg()[0] > 0.5:
        log.warning("load average is %.2f before starting: other processes share the CPU, timings will be noisy",
                    os.getloadavg()[0])
    base = ensure_embedded_base(BASE_DIR)
    tokenizer = load_tokenizer(str(base))
    root = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    log.info("workspace %s, base %s, config %s", root, base, cfg)
    try:
        # The trainer's workspace; every benchmark's settings are these but for the folders.
        settings = make_settings(root / "loop", base, cfg)
        results["meta"]["settings"] = settings.model_dump(mode="json", exclude={"auth", "auth_file"})
        if cfg.runs("startup"):  # first: the app in its own process, with an empty compiler cache
            run_step(results, "startup", lambda: bench_startup(cfg, base, tokenizer, root / "startup"))
        if cfg.runs("store"):
            run_step(results, "store", lambda: bench_store(cfg))
        if cfg.runs("phi"):  # no model: redaction on the generated evaluation set
            run_step(results, "phi", bench_phi)
        if cfg.runs("team"):  # no model: the review queue, agreement and export at 100k scale
            run_step(results, "team", lambda: bench_team(cfg, root / "team"))
        if cfg.runs("swap"):
            run_step(results, "swap", lambda: bench_swap(cfg, base, tokenizer, root / "swap"))
        if cfg.runs("candidates"):  # before the trainer process exists: serving while it is idle
            run_step(results, "candidates", lambda: bench_candidates(cfg, base, tokenizer, root / "candidates"))
        if cfg.runs("concurrency"):  # also while the trainer is idle
            run_step(results, "concurrency", lambda: bench_concurrency(cfg, base, tokenizer, root / "concurrency"))
        if cfg.runs("backends"):  # also while the trainer is idle: vLLM's server beside the local model
            run_step(results, "backends", lambda: bench_backends(cfg, base, tokenizer, root / "backends"))
        if cfg.runs("decode"):  # also while the trainer is idle; after the others, in the same run
            run_step(results, "decode", lambda: bench_decode(cfg, base, tokenizer, root / "decode"))
        if cfg.runs("safety"):
            run_step(results, "safety", lambda: bench_safety(cfg))
        if cfg.runs("reward"):
            run_step(results, "reward", lambda: bench_reward(cfg, base, tokenizer))
        if cfg.runs("retrain") or cfg.runs("rounds") or cfg.runs("answers"):
            run_with_trainer(cfg, settings, base, tokenizer, results)
        if cfg.runs("teach"):  # last: its own workspaces, each with the app and its trainer process
            run_step(results, "teach", lambda: bench_teach(cfg, base, root / "teach"))
    finally:
        if args.keep:
            log.info("kept the workspace %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["meta"]["total_runtime_s"] = time.perf_counter() - started
    results["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["goals"] = evaluate_goals(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    log.info("wrote %s", args.out)
    print_table(report_rows(results))
    failed = [key for key in cfg.only if "error" in results.get(key, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
