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

Two further figures, without goals, show how far the set's figures carry beyond its templates:

- **the app's own clinical text unchanged**: every sentence of the shipped evaluation questions and
  reference answers, patient questions and answers, probe passages and benign red-team prompts
  (none holds an identifier), written before the name detector;
- **names from other locales**: Faker names from locales the set does not use, and in other
  scripts, placed in sentence frames of their own.
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


def shipped_clinical_sentences() -> list[str]:
    """Every sentence of the app's shipped clinical text that holds no identifier."""
    from ..evaluation.evalsets import load_eval_questions, load_patient_questions, load_probe_texts
    from ..evaluation.redteam_data import load_benign

    texts = [t for q in load_eval_questions() for t in (q.question, q.reference)]
    texts += [t for q in load_patient_questions() for t in (q.question, q.answer)]
    texts += [p.text for p in load_probe_texts()]
    texts += [p.prompt for p in load_benign()]
    return [s for text in texts for s in re.split(r"(?<=[.!?])\s+", text) if s]


def unchanged_share(redact: Callable[[str], str], sentences: list[str]) -> dict:
    """The share of ``sentences`` that ``redact`` leaves exactly as they are, and the changed ones."""
    changed = [{"text": s, "redacted": out} for s in sentences if (out := redact(s)) != s]
    return {"unchanged": round(1 - len(changed) / max(1, len(sentences)), 4), "sentences": len(sentences), "changed": changed}


# Locales the evaluation set does not draw names from, Latin script and others.
OTHER_LOCALES = (
    "en_AU", "en_NZ", "en_CA", "en_IE", "es_MX", "pt_PT", "fr_CA", "de_AT", "nl_BE", "sv_SE", "fi_FI", "da_DK",
    "no_NO", "cs_CZ", "sk_SK", "hu_HU", "ro_RO", "hr_HR", "sl_SI", "lt_LT", "lv_LV", "et_EE", "az_AZ", "id_ID",
    "fil_PH", "tw_GH", "el_GR", "ru_RU", "uk_UA", "ar_AA", "he_IL", "hi_IN", "bn_BD", "ta_IN", "fa_IR", "th_TH",
    "zh_CN", "ja_JP", "ko_KR", "ka_GE",
)  # fmt: skip
FRAMES = (
    "{n} attended with her mother and was worried about the rash.",
    "Discussed the scan with {n} and her husband this afternoon.",
    "The consultant asked {n} to stop the ibuprofen.",
    "We have booked {n} into the fracture clinic next week.",
    "{n} is a retired teacher who lives alone.",
    "Letter copied to {n}.",
    "According to {n}, the pain started after lifting a box.",
    "Could {n} have a urine sample sent today?",
    "Handover: {n} in bed 4 needs a repeat potassium.",
    "{n}'s INR was 4.2 so warfarin was held.",
)
PER_LOCALE = 12


def other_locales_recall(redact: Callable[[str], str], seed: int = 11) -> dict:
    """Names found among Faker names of ``OTHER_LOCALES`` (full names, given names and surnames alone) in ``FRAMES``."""
    from faker import Faker

    rng = random.Random(seed)
    hits = total = 0
    missed: list[dict] = []
    for locale in OTHER_LOCALES:
        fake = Faker(locale)
        fake.seed_instance(seed)
        for k in range(PER_LOCALE):
            # A given name and a surname rather than ``fake.name()``, whose titles ("Dr.", "RNDr.")
            # redaction keeps on purpose.
            first, last = fake.first_name(), fake.last_name()
            name = f"{first} {last}" if k % 3 else (first if k % 2 else last)
            text = rng.choice(FRAMES).format(n=name)
            out = redact(text)
            total += 1
            if found("NAME", name, out):
                hits += 1
            else:
                missed.append({"locale": locale, "name": name, "redacted": out})
    return {"recall": round(hits / total, 4), "names": total, "locales": len(OTHER_LOCALES), "missed": missed}


EXAMPLES = 40  # missed identifiers and changed clean sentences kept in the results, to read


def bench_phi() -> dict:
    """The benchmark section: the app's redaction scored on the shipped set (with the first
    ``EXAMPLES`` misses and changed clean sentences), on the app's own clinical text, and on names
    from other locales."""
    from ..safety.phi import redact

    def text_of(text: str) -> str:
        return redact(text).text

    figures = score(text_of)
    own = unchanged_share(text_of, shipped_clinical_sentences())
    others = other_locales_recall(text_of)
    return {
        **figures,
        "missed": figures["missed"][:EXAMPLES],
        "changed": figures["changed"][:EXAMPLES],
        "own_text": {**own, "changed": own["changed"][:EXAMPLES]},
        "other_locales": {**others, "missed": others["missed"][:EXAMPLES]},
    }
