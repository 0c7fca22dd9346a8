"""Benchmark ``phi``: how well redaction finds identifiers, on the generated evaluation set.

``score(redact)`` runs a redaction function over ``hitl_app/data/phi_eval.jsonl``
(``phi_set.py`` makes it) and reports:

- **recall per type** and overall: an identifier counts as found when neither its value nor any
  of its words (a name's parts, a number's groups of 4 or more characters) is left in the
  redacted text, so half a name is a miss;
- **clean sentences unchanged**: the share of identifier-free sentences (eponyms, drugs, scores,
  doses, dates of no one) that come back exactly as they went in;
- **latency**: p50 and p95 of one redaction of a 1,000-character text (sentences of the set joined).

Goals: overall recall ≥ 0.98, names ≥ 0.97, clean unchanged ≥ 0.98, p95 ≤ 5 ms.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from .figures import percentile
from .phi_set import PHI_EVAL_PATH

GOALS = {"recall": 0.98, "name_recall": 0.97, "clean_unchanged": 0.98, "p95_ms": 5.0}
LATENCY_TEXTS = 200
TEXT_CHARS = 1000


def load_set(path: Path = PHI_EVAL_PATH) -> list[dict]:
    """The evaluation set's rows."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def found(kind: str, value: str, redacted: str) -> bool:
    """Whether an identifier is gone from ``redacted``: its value and every word of it."""
    if value in redacted:
        return False
    # A name's parts of 2 letters or more; a number's groups of 4 characters or more (an area code
    # or the "020" of a London number identifies no one).
    words = [w for w in re.split(r"[\s,;:()]+", value) if len(w) >= (2 if kind == "NAME" else 4)]
    return not any(re.search(rf"(?<![\w]){re.escape(w)}(?![\w])", redacted) for w in words)


def score(redact: Callable[[str], str], rows: list[dict] | None = None, seed: int = 0) -> dict:
    """Recall per type, the clean share unchanged, and redaction latency for ``redact``.

    Args:
        redact: text -> redacted text.
        rows: the evaluation set (the shipped one by default).
        seed: the seed that joins sentences into the latency texts.
    """
    rows = load_set() if rows is None else rows
    total, hits = Counter(), Counter()
    missed: list[dict] = []
    clean = unchanged = 0
    changed: list[dict] = []
    for row in rows:
        out = redact(row["text"])
        if row["clean"]:
            clean += 1
            if out == row["text"]:
                unchanged += 1
            else:
                changed.append({"id": row["id"], "text": row["text"], "redacted": out})
        for ident in row["identifiers"]:
            total[ident["type"]] += 1
            if found(ident["type"], ident["value"], out):
                hits[ident["type"]] += 1
            else:
                missed.append({"id": row["id"], "type": ident["type"], "value": ident["value"], "redacted": out})
    recall = {kind: round(hits[kind] / n, 4) for kind, n in sorted(total.items())}
    overall = sum(hits.values()) / max(1, sum(total.values()))
    latency = _latency(redact, rows, seed)
    figures = {
        "recall": round(overall, 4),
        "recall_by_type": recall,
        "identifiers": dict(sorted(total.items())),
        "clean_unchanged": round(unchanged / max(1, clean), 4),
        "clean_sentences": clean,
        **latency,
        "missed": missed,
        "changed": changed,
    }
    figures["goals"] = {
        "recall": figures["recall"] >= GOALS["recall"],
        "name_recall": recall.get("NAME", 0.0) >= GOALS["name_recall"],
        "clean_unchanged": figures["clean_unchanged"] >= GOALS["clean_unchanged"],
        "p95_ms": figures["p95_ms"] <= GOALS["p95_ms"],
    }
    return figures


def _latency(redact: Callable[[str], str], rows: list[dict], seed: int) -> dict:
    rng = random.Random(seed)
    texts = []
    for _ in range(LATENCY_TEXTS):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < TEXT_CHARS:
            parts.append(rng.choice(rows)["text"])
        texts.append(" ".join(parts)[:TEXT_CHARS])
    redact(texts[0])  # not timed: the first call compiles the rules' regular expressions
    times = []
    for text in texts:
        started = time.perf_counter()
        redact(text)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(times, 50), 3), "p95_ms": round(percentile(times, 95), 3), "latency_texts": len(texts)}


EXAMPLES = 40  # missed identifiers and changed clean sentences kept in the results, to read


def bench_phi() -> dict:
    """The benchmark section: the app's redaction scored on the shipped set (with the first
    ``EXAMPLES`` misses and changed clean sentences)."""
    from ..safety.phi import redact

    figures = score(lambda text: redact(text).text)
    return {**figures, "missed": figures["missed"][:EXAMPLES], "changed": figures["changed"][:EXAMPLES]}
