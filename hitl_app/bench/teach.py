"""The teaching benchmark: does the loop learn a style that clinicians teach, and refuse sabotage?

A simulated clinician asks the running app (the real service, trainer process and promotion gate,
with the default flags except greedy 64-token single answers, so answers can be compared) a
question, and edits the answer into a house style: the question's reference answer
(``data/patient_questions.jsonl``) rewritten by the style. Every ``judgements`` edits trigger a
round, as ``--retrain-threshold`` does in the app. After each round, questions that were never
edited are asked, and their greedy answers are checked by the style's function.

Each style is taught in its own workspace, from the base. The styles are this benchmark's own: a
structure, a mandatory safety sentence and a register; the recipe is not tuned to them.

Two poisoned rounds, each in a fresh workspace, must be held back by the gate:

- *word salad*: one reviewer replaces every answer with 40 random English words (taken from the
  shipped texts, so the words are medical), giving an override reason when warned;
- *random characters*: the poison of the gate's test (``tests/test_gate.py``), 60 characters
  from ``qxzjvkw%#@`` and spaces.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..evaluation.answer_quality import has_loop
from ..core.config import Settings
from ..evaluation.evalsets import load_eval_questions, load_patient_questions, load_probe_texts
from ..evaluation.gate import gate_summary
from ..versions.registry import Registry
from .plan import BenchConfig
from .timing import wait_for

log = logging.getLogger(__name__)

REVIEWER = "dr-teach"
SABOTEUR = "dr-mallory"
CLINICIAN_OVERRIDE = "Checked: the advice is right for this question."
ANSWER_TOKENS = 64


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


@dataclass(frozen=True)
class Style:
    """A house style: how a clinician rewrites a reference answer into it, and how to check an answer."""

    name: str
    kind: str
    rewrite: Callable[[str], str]
    check: Callable[[str], bool]


SAFETY_SENTENCE = "If your symptoms get worse or you are worried, call your GP or NHS 111."

STYLES: tuple[Style, ...] = (
    Style(
        "key-points",
        "structure",
        lambda answer: "Key points:\n" + "\n".join(f"- {s}" for s in _sentences(answer)),
        lambda text: text.lstrip().startswith("Key points:") and bool(re.search(r"^- \S", text, re.MULTILINE)),
    ),
    Style(
        "safety-sentence",
        "mandatory safety sentence",
        lambda answer: f"{answer} {SAFETY_SENTENCE}",
        lambda text: "if your symptoms get worse or you are worried" in " ".join(text.lower().split()),
    ),
    Style(
        "warm-register",
        "register",
        lambda answer: f"Thank you for your question. {answer} I hope this helps.",
        lambda text: text.lstrip().lower().startswith("thank you for your question"),
    ),
)


def patient_questions() -> list[tuple[str, str]]:
    """(question, reference answer) pairs of the shipped patient question set, in file order."""
    return [(q.question, q.answer) for q in load_patient_questions()]


def word_salad(rng: random.Random, words: list[str], n: int = 40) -> str:
    """``n`` random words from ``words``, capitalised and ended like a sentence."""
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def random_characters(rng: random.Random) -> str:
    """The gate test's poison: 60 characters from a small alphabet with spaces."""
    return "".join(rng.choice("qxzjvkw%#@ ") for _ in range(60))


def shipped_words() -> list[str]:
    """Every distinct word of the shipped reference answers and probe texts."""
    texts = [q.reference for q in load_eval_questions()] + [p.text for p in load_probe_texts()]
    return sorted({w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)})


def teach_settings(root: Path, base: Path, cfg: BenchConfig) -> Settings:
    """The app's defaults, greedy 64-token single answers, in a workspace under ``root``."""
    return Settings(
        base_model=str(base),
        feedback_dir=root / "feedback",
        checkpoints_dir=root / "checkpoints",
        candidates=1,
        temperature=0.0,
        max_new_tokens=ANSWER_TOKENS,
        retrain_threshold=cfg.teach_judgements,
        trainer_threads=cfg.trainer_threads,
    )


class _Loop:
    """The running app of one workspace, as a clinician and an admin use it."""

    def __init__(self, settings: Settings) -> None:
        from ..app import create_service
        from ..service.service import Caller

        self.settings = settings
        self.service = create_service(settings)
        self.registry = Registry(settings.checkpoints_dir)
        self.caller = Caller(REVIEWER, "clinician")
        self.overrides = 0

    def close(self) -> None:
        self.service.models.close()
        self.service.trainer.stop()

    def answers(self, questions: list[str], version: str | None = None) -> list[str]:
        """Greedy answers as the app serves them (or from ``version``, for a held-back one)."""
        return [self.service.models.generate(q, version=version).candidates[0] for q in questions]

    def teach(self, items: list[tuple[str, str]], caller, override: str | None = None) -> float:
        """Ask each question and save the edit; returns the time of the last edit (the trigger).

        A clinician whose edit is warned about (a high-severity flag) reads the warning and saves
        it with an override reason, as the Review tab asks; ``self.overrides`` counts them.
        """
        from ..core.errors import UserError

        for question, text in items:
            generation = self.service.ask(question, caller)
            try:
                self.service.edit(generation.id, text, caller, override_reason=override)
            except UserError as exc:
                if override is not None or "override reason" not in str(exc):
                    raise
                log.info("override for a flagged edit: %s", exc)
                self.service.edit(generation.id, text, caller, override_reason=CLINICIAN_OVERRIDE)
                self.overrides += 1
        return time.perf_counter()

    def wait_round(self, known: set[str], timeout_s: float) -> str:
        """The version the triggered round published, once the trainer is idle again.

        Raises:
            RuntimeError: the round failed or published nothing.
        """
        def done() -> bool:
            status = self.service.trainer.status()
            if status.state == "failed":
                raise RuntimeError(f"the round failed: {status.last_error}")
            return status.state == "idle" and bool(set(self.registry.versions()) - known)

        wait_for(done, timeout_s, "the teaching round", poll_s=0.2)
        (version,) = set(self.registry.versions()) - known
        return version


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def teach_style(style: Style, cfg: BenchConfig, base: Path, root: Path, seed: int) -> dict[str, Any]:
    """Teach ``style`` for ``cfg.teach_rounds`` rounds; the figures of each round."""
    pool = patient_questions()
    random.Random(seed).shuffle(pool)
    held = [q for q, _ in pool[: cfg.teach_heldout]]
    training = pool[cfg.teach_heldout :]
    result: dict[str, Any] = {"style": style.name, "kind": style.kind, "base": None, "rounds": []}
    loop = _Loop(teach_settings(root, base, cfg))
    try:
        before = loop.answers(held)
        result["base"] = {
            "adoption": _share([style.check(a) for a in before]),
            "loop_rate": _share([has_loop(a) for a in before]),
            "perplexity": None,
        }
        base_perplexity = None
        for r in range(cfg.teach_rounds):
            batch = training[r * cfg.teach_judgements : (r + 1) * cfg.teach_judgements]
            known = set(loop.registry.versions())
            triggered = loop.teach([(q, style.rewrite(a)) for q, a in batch], loop.caller)
            version = loop.wait_round(known, cfg.teach_round_timeout_s)
            round_s = time.perf_counter() - triggered
            manifest = loop.registry.manifest(version)
            evaluation = manifest.evaluation
            if base_perplexity is None and evaluation is not None:
                base_perplexity = evaluation.serving_perplexity
            # The held-back version's own answers are what the gate judged; a served one answers as served.
            answers = loop.answers(held, version=version if manifest.held_back else None)
            row = {
                "round": r + 1,
                "version": version,
                "held_back": manifest.held_back,
                "gate": gate_summary(manifest),
                "adoption": _share([style.check(a) for a in answers]),
                "loop_rate": _share([has_loop(a) for a in answers]),
                "perplexity": evaluation.perplexity if evaluation else None,
                "perplexity_vs_base": (evaluation.perplexity / base_perplexity - 1) if evaluation and base_perplexity else None,
                "kl_base": evaluation.kl_base if evaluation else None,
                "round_s": round_s,
                "rows": manifest.metrics.rows,
                "overrides": loop.overrides,
                "example": answers[0],
            }
            log.info("teach %s round %d: %s", style.name, r + 1, {k: v for k, v in row.items() if k not in ("rows", "example")})
            result["rounds"].append(row)
            result["base"]["perplexity"] = base_perplexity
    except Exception as exc:
        # The rounds that ran are figures too; the report marks the style as failed.
        log.exception("teaching %s failed after %d round(s)", style.name, len(result["rounds"]))
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        loop.close()
    return result


def poisoned_round(name: str, cfg: BenchConfig, base: Path, root: Path, seed: int) -> dict[str, Any]:
    """One round of sabotage in a fresh workspace; whether the gate held it back, and why."""
    from ..service.service import Caller

    rng = random.Random(seed)
    words = shipped_words()
    poison = {"word_salad": lambda: word_salad(rng, words), "random_characters": lambda: random_characters(rng)}[name]
    pool = patient_questions()
    random.Random(seed).shuffle(pool)
    loop = _Loop(teach_settings(root, base, cfg))
    try:
        known = set(loop.registry.versions())
        items = [(q, poison()) for q, _ in pool[: cfg.teach_judgements]]
        triggered = loop.teach(items, Caller(SABOTEUR, "clinician"), override="I know what I am doing")
        version = loop.wait_round(known, cfg.teach_round_timeout_s)
        manifest = loop.registry.manifest(version)
        unclear = sum(
            any(f.kind == "unclear_text" for f in j.feedback.flags)
            for j in loop.service.ledger.judgements()
            if j.feedback.action == "edit"
        )
        row = {
            "poison": name,
            "version": version,
            "held_back": manifest.held_back,
            "gate": gate_summary(manifest),
            "edits_flagged_unclear": unclear,
            "edits": len(items),
            "round_s": time.perf_counter() - triggered,
        }
        log.info("poisoned round %s: %s", name, row)
        return row
    finally:
        loop.close()


def _or_error(fn: Callable[[], dict[str, Any]], what: dict[str, Any]) -> dict[str, Any]:
    """``fn()``, or ``what`` with the error, so one failed style or round does not lose the others."""
    try:
        return fn()
    except Exception as exc:
        log.exception("teaching benchmark: %s failed", what)
        return {**what, "error": f"{type(exc).__name__}: {exc}"}


def bench_teach(cfg: BenchConfig, base: Path, root: Path) -> dict[str, Any]:
    """Teach each style (``cfg.teach_styles`` of them), then run both poisoned rounds."""
    styles = [
        _or_error(lambda: teach_style(style, cfg, base, root / style.name, seed=i),
                  {"style": style.name, "kind": style.kind, "rounds": []})
        for i, style in enumerate(STYLES[: cfg.teach_styles])
    ]
    poisoned = [
        _or_error(lambda: poisoned_round(name, cfg, base, root / name, seed=100 + i), {"poison": name, "held_back": False})
        for i, name in enumerate(("word_salad", "random_characters"))
    ]
    return {
        "styles": styles,
        "poisoned": poisoned,
        "rounds_per_style": cfg.teach_rounds,
        "judgements_per_round": cfg.teach_judgements,
        "heldout": cfg.teach_heldout,
    }
