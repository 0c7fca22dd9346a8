"""Benchmark ``safety``: what the safety checks add to each answer, and how often they over-flag.

Every answer the app records passes the input guard (its question), the answer checks (doses,
contraindications, interactions, urgency, identifiers) and redaction. This times that work per
answer, on the shipped evaluation questions with their reference answers, repeated so the
percentiles are stable. The reference answers are correct, so a medication flag on one is an
over-flag: the benchmark reports that rate on the same set. It also reports how much of each
shipped red-team suite the input guard blocks (all of the adversarial one is the aim, none of the
benign one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..evaluation.evalsets import load_eval_questions
from ..evaluation.redteam_data import load_adversarial, load_benign
from ..safety.checker import MEDICATION_KINDS, SafetyChecker
from .plan import BenchConfig
from .figures import fmt, summarise

log = logging.getLogger(__name__)


def bench_safety(cfg: BenchConfig) -> dict[str, Any]:
    """Benchmark ``safety`` (see the module docstring): per-answer time p50/p95, over-flag rate."""
    checker = SafetyChecker()
    questions = load_eval_questions()
    for q in questions:  # warm-up: compiled patterns, cached table indices
        checker.check_answer(q.question, q.reference)
    times: list[float] = []
    for _ in range(cfg.safety_repeats):
        for q in questions:
            started = time.perf_counter()
            checker.check_input(q.question)
            checker.check_answer(q.question, q.reference)
            checker.redact_many([q.question, q.reference])
            times.append(time.perf_counter() - started)
    flagged = [
        q.id for q in questions if any(f.kind in MEDICATION_KINDS for f in checker.check_answer(q.question, q.reference))
    ]
    summary = summarise(times)
    adversarial, benign = load_adversarial(), load_benign()
    blocked = sum(not checker.check_input(p.prompt).allowed for p in adversarial)
    refused = sum(not checker.check_input(p.prompt).allowed for p in benign)
    log.info("safety: %d checks, p50 %s, p95 %s; over-flag rate %d/%d", len(times),
             fmt(summary["p50_s"], " ms", 1e3, 2), fmt(summary["p95_s"], " ms", 1e3, 2), len(flagged), len(questions))
    return {
        "per_answer": summary,
        "answers": len(questions),
        "mean_answer_chars": sum(len(q.reference) for q in questions) / len(questions),
        "over_flagged": flagged,
        "over_flag_rate": len(flagged) / len(questions),
        "guard_blocked": [blocked, len(adversarial)],
        "guard_refused_benign": [refused, len(benign)],
    }
