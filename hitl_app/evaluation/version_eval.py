"""Evaluation of a freshly trained version against the serving one, in the trainer, before publishing.

Data (see the README's "Evaluation" section):

- held-out feedback (``holdout``): preference pairs from held-out edits, rankings and votes, and
  the edited answers of held-out edits, the most recent ``MAX_HELDOUT_PAIRS`` / ``MAX_HELDOUT_EDITS``;
- the shipped evaluation questions (``hitl_app/data/eval_questions.jsonl``): the log-prob of their
  reference answers, a few prompts for the KL estimate, and a few greedy answers for their length;
- the shipped probe texts (``hitl_app/data/probe_texts.jsonl``): perplexity.

One ``PeftModel`` plays every model: the new adapter (``default``), the serving version's adapter
loaded beside it as ``serving`` (or the base, with adapters disabled), and the base. Each figure
the gate compares is the new and the serving version's on the same data. Figures on held-out
feedback change with every judgement, so both versions are measured on them in the run; figures
on the shipped data never change for a published version, so the serving version's are read back
(``eval_cache``: its manifest, or the base's cache) when the evaluation's inputs are the same, and
measured only otherwise. ``EvalMetrics.reused`` records each figure read back and its source.

Under a round budget (``fraction`` < 1) the sample questions, the red-team prompts and the KL
prompts are cut to their first items; ``EvalMetrics.reduced`` records each figure measured so.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .answer_quality import answer_quality
from ..core.chat import Message, chat_prompt
from . import clinical_text, redteam as redteam_module
from .clinical_text import ClinicalTextJudge, reply_nll
from ..core.config import EvaluationConfig
from ..core.shipped import shipped_file
from .eval_cache import FixedFigures, SampleRecord
from .evalsets import EvalQuestion, load_eval_questions, load_probe_texts
from .model_view import ModelView
from .greedy import greedy_answers
from .logprobs import mean_completion_logprob, perplexity
from .preference_accuracy import preference_accuracy
from .sampled_kl import sample_kl_many
from ..feedback.training_rows import prompt_messages, rows_for
from ..feedback.holdout import is_held_out
from ..feedback.ledger import Judgement
from .redteam import RedTeamSet, redteam_set, score_version
from ..safety.checker import SafetyChecker
from ..versions.manifest import EvalMetrics, SampleAnswer

log = logging.getLogger(__name__)

MAX_HELDOUT_PAIRS = 32
MAX_HELDOUT_EDITS = 16
REFERENCE_QUESTIONS = 16  # shipped questions whose reference answers are scored
SAMPLE_QUESTIONS = 16  # shipped questions both versions answer greedily: form, fluency, length, styles
SAMPLE_MAX_TOKENS = 96
KL_NEW_TOKENS = 32
SERVING_ADAPTER = "serving"
# A version with no adapter has implicit reward 0 for every answer (policy = reference), so it
# ranks no pair: its held-out accuracy is chance.
CHANCE_ACCURACY = 0.5
# The fewest items a round budget leaves of each reduced set.
MIN_SAMPLE_QUESTIONS = 4
MIN_KL_PROMPTS = 2
MIN_REDTEAM_PROMPTS = 1
# Figures computed from the sample answers, and from the red-team answers.
SAMPLE_FIGURES = (
    "loop_rate", "finished_rate", "repeated_ngram_rate", "distinct_2", "answer_nll", "unclear_rate",
)  # fmt: skip
REDTEAM_FIGURES = ("safe_rate", "over_refusal_rate", "medication_flag_rate")

ProgressFn = Callable[[float, str], None]


@dataclass
class EvalSets:
    """What a version is evaluated on."""

    pairs: list[dict]  # DPO rows from held-out judgements
    edit_prompts: list[list[Message]]
    edit_texts: list[str]
    reference_prompts: list[list[Message]]
    reference_texts: list[str]
    probe_texts: list[str]
    kl_prompts: list[list[Message]]
    sample_questions: list[EvalQuestion]
    system_prompt: str | None = None
    redteam: RedTeamSet | None = None  # None: no red-team scoring (--redteam-prompts 0)

    @property
    def sample_prompts(self) -> list[list[Message]]:
        """The chat prompts of the sample questions."""
        return [chat_prompt(q.question, self.system_prompt) for q in self.sample_questions]

    def fixed_inputs(self) -> dict[str, Any]:
        """Everything the figures on the shipped data depend on, besides the model: the key's inputs
        (``eval_cache.eval_key``, with the base model and device added by the caller)."""
        questions = [q.model_dump() for q in load_eval_questions()]  # the clinical-text judge reads them all
        return {
            "system_prompt": self.system_prompt,
            "reference": [self.reference_prompts, self.reference_texts],
            "probe_texts": self.probe_texts,
            "kl_prompts": self.kl_prompts,
            "kl_new_tokens": KL_NEW_TOKENS,
            "samples": [[q.id, q.question] for q in self.sample_questions],
            "sample_max_tokens": SAMPLE_MAX_TOKENS,
            "redteam": None if self.redteam is None else [self.redteam.adversarial, self.redteam.benign],
            "redteam_max_tokens": redteam_module.MAX_NEW_TOKENS,
            "judge": [questions, clinical_text.MARGIN_NATS, clinical_text.REFERENCE_QUANTILE],
            "drug_table": hashlib.sha256(shipped_file("drugs.json").read_bytes()).hexdigest(),
        }

    def reduced_to(self, fraction: float) -> tuple["EvalSets", dict[str, str]]:
        """These sets with the sample questions, red-team prompts and KL prompts cut to ``fraction`` of
        their items (their first ones; at least a few), and the figures that are then measured on fewer
        items, with how many. ``fraction`` 1 returns the sets unchanged."""
        if fraction >= 1:
            return self, {}
        reduced: dict[str, str] = {}

        def cut(items: list, least: int, what: str, figures: tuple[str, ...]) -> list:
            n = min(len(items), max(least, math.ceil(fraction * len(items))))
            if n < len(items):
                reduced.update({f: f"{n} of {len(items)} {what}" for f in figures})
            return items[:n]

        samples = cut(
            self.sample_questions, MIN_SAMPLE_QUESTIONS, "sample questions",
            SAMPLE_FIGURES + tuple(f"serving_{f}" for f in SAMPLE_FIGURES) + ("mean_answer_tokens",),
        )  # fmt: skip
        kl = cut(self.kl_prompts, MIN_KL_PROMPTS, "KL prompts", ("kl_base", "kl_serving"))
        red = self.redteam
        if red is not None:
            total = len(red.adversarial)
            n = min(total, max(MIN_REDTEAM_PROMPTS, math.ceil(fraction * total)))
            if n < total:
                reduced.update({f: f"{n} of {total} red-team prompts of each suite" for f in REDTEAM_FIGURES})
                red = RedTeamSet(adversarial=red.adversarial[:n], benign=red.benign[:n])
        return replace(self, sample_questions=samples, kl_prompts=kl, redteam=red), reduced


@dataclass
class VersionReport:
    """What the evaluation of a new version found: its figures, and the answers they came from.

    ``fixed`` is the new version's own figures on the shipped data; ``serving_fixed`` the serving
    version's, with their source (``measured`` when they were measured in this run).
    """

    metrics: EvalMetrics
    samples: list[SampleAnswer]
    fixed: FixedFigures | None = None
    serving_fixed: FixedFigures | None = None


def build_eval_sets(judgements: list[Judgement], config: EvaluationConfig) -> EvalSets:
    """The evaluation data: held-out feedback among ``judgements`` and the shipped sets.

    Args:
        judgements: every judgement in the store; the held-out ones are picked by record id.
        config: the evaluation's settings (``settings.evaluation_config``).
    """
    held = [j for j in judgements if is_held_out(j, config.holdout_fraction)]
    pairs = [row for j in held for row in rows_for(j).dpo][-MAX_HELDOUT_PAIRS:]
    edits = [j for j in held if j.feedback.action == "edit"][-MAX_HELDOUT_EDITS:]
    questions = load_eval_questions()

    def spread(n: int, offset: int) -> list:
        # Every k-th question, so a handful still spans the specialties.
        step = max(1, len(questions) // n)
        return questions[offset::step][:n]

    def chat(text: str) -> list[Message]:
        return chat_prompt(text, config.system_prompt)

    reference = spread(REFERENCE_QUESTIONS, 0)
    return EvalSets(
        pairs=pairs,
        edit_prompts=[prompt_messages(j.generation) for j in edits],
        edit_texts=[j.feedback.text or "" for j in edits],
        reference_prompts=[chat(q.question) for q in reference],
        reference_texts=[q.reference for q in reference],
        probe_texts=[p.text for p in load_probe_texts()],
        kl_prompts=[chat(q.question) for q in spread(config.eval_probe_prompts, 1)],
        sample_questions=spread(SAMPLE_QUESTIONS, 2),
        system_prompt=config.system_prompt or None,
        redteam=redteam_set(config.redteam_prompts) if config.redteam_prompts else None,
    )


def evaluate_version(
    model,
    tokenizer,
    serving: str,
    serving_dir: Path | None,
    sets: EvalSets,
    config: EvaluationConfig,
    progress: ProgressFn | None = None,
    judge: ClinicalTextJudge | None = None,
    serving_fixed: FixedFigures | None = None,
    key: str | None = None,
    fraction: float = 1.0,
) -> VersionReport:
    """Measure the new adapter (``default`` of ``model``) against the serving version and the base.

    Args:
        model: the round's ``PeftModel``; its ``default`` adapter is the new version.
        tokenizer: its tokenizer.
        serving: the serving version's name (``base`` or ``vNNNN``).
        serving_dir: that version's adapter folder; None for the base. It is loaded as an extra
            adapter for the evaluation and removed again before this returns.
        sets: the evaluation data (``build_eval_sets``).
        config: the evaluation's settings (``settings.evaluation_config``).
        progress: called with (fraction done, message) between measurements.
        judge: the clinical-text threshold for this base and system prompt; None: calibrated here.
        serving_fixed: the serving version's own figures on the shipped data, read back from its
            manifest or the base's cache for these same inputs (``key``); None: measured here.
            Sample answers it lacks are generated here.
        key: the evaluation key of ``sets`` (``eval_cache.eval_key``), recorded in the figures.
        fraction: below 1, the share of the sample questions, red-team prompts and KL prompts
            measured (``EvalSets.reduced_to``; a round budget).
    """
    started = time.perf_counter()
    report = progress or (lambda f, m: None)
    sets, reduced = sets.reduced_to(fraction)
    if serving_dir is not None:
        model.load_adapter(str(serving_dir), adapter_name=SERVING_ADAPTER, is_trainable=False)
    try:
        new = ModelView.adapter(model, "default")
        base = ModelView.base(model)
        old = base if serving_dir is None else ModelView.adapter(model, SERVING_ADAPTER)
        figures: dict = {"serving_version": serving, "eval_key": key}

        report(0.0, "evaluating: held-out pairs")
        figures["heldout_pairs"] = len(sets.pairs)
        if sets.pairs:
            mine = preference_accuracy(new, tokenizer, sets.pairs, reference=base, beta=config.beta)
            figures["heldout_accuracy"] = mine.accuracy
            figures["heldout_margin"] = mine.mean_margin
            figures["serving_heldout_accuracy"] = (
                CHANCE_ACCURACY
                if serving_dir is None
                else preference_accuracy(old, tokenizer, sets.pairs, reference=base, beta=config.beta).accuracy
            )
        report(0.1, "evaluating: held-out edits")
        figures["heldout_edits"] = len(sets.edit_texts)
        if sets.edit_texts:
            figures["edit_logprob"] = mean_completion_logprob(new, tokenizer, sets.edit_prompts, sets.edit_texts)
            figures["serving_edit_logprob"] = mean_completion_logprob(old, tokenizer, sets.edit_prompts, sets.edit_texts)
        report(0.2, "evaluating: KL to the base and the serving version")
        references = [base] if serving_dir is None else [base, old]
        kls = sample_kl_many(new, references, tokenizer, sets.kl_prompts, KL_NEW_TOKENS, seed=config.seed)
        figures["kl_base"] = kls[0].kl_per_token
        figures["kl_serving"] = kls[-1].kl_per_token
        judge = judge or ClinicalTextJudge.calibrate(base, tokenizer, sets.system_prompt)
        fixed = measure_fixed(
            new, base, tokenizer, sets, config.system_prompt, reduced,
            progress=lambda f, m: report(0.35 + 0.45 * f, f"evaluating the new version: {m}"),
        )  # fmt: skip
        if serving_fixed is None:
            serving_fixed = measure_fixed(
                old, base, tokenizer, sets, config.system_prompt, reduced,
                progress=lambda f, m: report(0.8 + 0.15 * f, f"evaluating the serving version: {m}"),
            )  # fmt: skip
            generated = 0
        else:
            report(0.8, "evaluating: the serving version's sample answers")
            serving_fixed, generated = _complete_samples(serving_fixed, old, base, tokenizer, sets)
        samples = _sample_answers(sets, fixed, serving_fixed)
        figures.update(_sample_figures(tokenizer, samples, judge))
        figures.update(_fixed_figures(fixed, serving_fixed, sets))
        figures["reused"] = _reused(serving_fixed, sets, generated)
        figures["reduced"] = reduced
    finally:
        if SERVING_ADAPTER in model.peft_config:
            model.delete_adapter(SERVING_ADAPTER)
        model.set_adapter("default")
    figures["duration_s"] = round(time.perf_counter() - started, 2)
    metrics = EvalMetrics(**figures)
    log.info(
        "evaluation against %s (serving figures: %s%s): %s",
        serving,
        metrics.serving_figures_from,
        f"; reduced: {sorted(reduced)}" if reduced else "",
        metrics.model_dump(exclude={"serving_version", "reused", "reduced", "eval_key"}),
    )
    return VersionReport(metrics=metrics, samples=samples, fixed=fixed, serving_fixed=serving_fixed)


def measure_fixed(
    view: ModelView,
    base: ModelView,
    tokenizer,
    sets: EvalSets,
    system_prompt: str,
    reduced: dict[str, str] | None = None,
    progress: ProgressFn | None = None,
) -> FixedFigures:
    """One version's figures on the shipped data: the reference answers' log-prob, probe perplexity,
    greedy answers to the sample questions (with their NLL under ``base``) and the red-team rates."""
    report = progress or (lambda f, m: None)
    started = time.perf_counter()
    figures: dict[str, Any] = {"redteam_s": None}
    report(0.0, "reference answers")
    figures["reference_logprob"] = mean_completion_logprob(view, tokenizer, sets.reference_prompts, sets.reference_texts)
    report(0.15, "probe perplexity")
    figures["perplexity"] = perplexity(view, tokenizer, sets.probe_texts).perplexity
    report(0.35, "sample answers")
    prompts = sets.sample_prompts
    answers = greedy_answers(view, tokenizer, prompts, SAMPLE_MAX_TOKENS)
    nll = reply_nll(base, tokenizer, prompts, [a.text for a in answers])
    samples = {
        q.id: SampleRecord(a.text, a.tokens < SAMPLE_MAX_TOKENS, n) for q, a, n in zip(sets.sample_questions, answers, nll)
    }
    figures["redteam_prompts"] = 0
    if sets.redteam is not None:
        report(0.75, "red-team prompts")
        score = score_version(view, tokenizer, sets.redteam, SafetyChecker(), system_prompt)
        figures.update(
            redteam_prompts=len(sets.redteam.adversarial),
            safe_rate=score.safe_rate,
            over_refusal_rate=score.over_refusal_rate,
            medication_flag_rate=score.medication_flag_rate,
            redteam_s=score.duration_s,
        )
    figures["duration_s"] = round(time.perf_counter() - started, 2)
    return FixedFigures(figures=figures, samples=samples, reduced=dict(reduced or {}))


def _complete_samples(
    fixed: FixedFigures, old: ModelView, base: ModelView, tokenizer, sets: EvalSets
) -> tuple[FixedFigures, int]:
    """``fixed`` with an answer (and its NLL under the base) to every sample question of ``sets``:
    the ones it lacks are generated by ``old``, the missing NLLs scored. Also returns how many
    answers were generated."""
    records = dict(fixed.samples)
    missing = [i for i, q in enumerate(sets.sample_questions) if q.id not in records]
    if missing:
        prompts = [sets.sample_prompts[i] for i in missing]
        for i, a in zip(missing, greedy_answers(old, tokenizer, prompts, SAMPLE_MAX_TOKENS)):
            records[sets.sample_questions[i].id] = SampleRecord(a.text, a.tokens < SAMPLE_MAX_TOKENS, None)
    unscored = [i for i, q in enumerate(sets.sample_questions) if records[q.id].nll is None]
    if unscored:
        prompts = [sets.sample_prompts[i] for i in unscored]
        texts = [records[sets.sample_questions[i].id].answer for i in unscored]
        for i, n in zip(unscored, reply_nll(base, tokenizer, prompts, texts)):
            qid = sets.sample_questions[i].id
            records[qid] = replace(records[qid], nll=n)
    if missing or unscored:
        log.info("serving sample answers: %d generated, %d scored, the rest from %s", len(missing), len(unscored), fixed.source)
    return replace(fixed, samples=records), len(missing)


def _sample_answers(sets: EvalSets, fixed: FixedFigures, serving_fixed: FixedFigures) -> list[SampleAnswer]:
    """Both versions' answers to the sample questions, as the manifest keeps them."""
    answers = []
    for q in sets.sample_questions:
        mine, theirs = fixed.samples[q.id], serving_fixed.samples[q.id]
        answers.append(
            SampleAnswer(
                question_id=q.id,
                question=q.question,
                system_prompt=sets.system_prompt,
                max_new_tokens=SAMPLE_MAX_TOKENS,
                answer=mine.answer,
                finished=mine.finished,
                serving_answer=theirs.answer,
                serving_finished=theirs.finished,
                answer_nll=mine.nll,
                serving_answer_nll=theirs.nll,
            )
        )
    return answers


def _sample_figures(tokenizer, samples: list[SampleAnswer], judge: ClinicalTextJudge) -> dict:
    """Form (loops, endings, repetition) and fluency (the base model's reading) of both versions' answers."""
    figures: dict = {"sample_answers": len(samples), "clinical_threshold": judge.threshold}
    for prefix, texts, finished, nll in (
        ("", [s.answer for s in samples], [s.finished for s in samples], [s.answer_nll for s in samples]),
        (
            "serving_",
            [s.serving_answer for s in samples],
            [s.serving_finished for s in samples],
            [s.serving_answer_nll for s in samples],
        ),
    ):
        quality = answer_quality(texts, finished)
        figures[f"{prefix}loop_rate"] = quality.loop_rate
        figures[f"{prefix}finished_rate"] = quality.finished_rate
        figures[f"{prefix}repeated_ngram_rate"] = quality.repeated_ngram_rate
        figures[f"{prefix}distinct_2"] = quality.distinct_2
        figures[f"{prefix}answer_nll"] = sum(nll) / len(nll)
        figures[f"{prefix}unclear_rate"] = sum(not judge.reads_as_clinical(x) for x in nll) / len(nll)
    figures["mean_answer_tokens"] = sum(len(tokenizer(s.answer, add_special_tokens=False)["input_ids"]) for s in samples) / len(samples)
    return figures


def _fixed_figures(fixed: FixedFigures, serving_fixed: FixedFigures, sets: EvalSets) -> dict:
    """The figures on the reference answers, the probe texts and the red-team prompts, of both versions."""
    figures: dict = {
        "reference_logprob": fixed.figures["reference_logprob"],
        "serving_reference_logprob": serving_fixed.figures["reference_logprob"],
        "perplexity": fixed.figures["perplexity"],
        "serving_perplexity": serving_fixed.figures["perplexity"],
    }
    if sets.redteam is not None:
        for name in REDTEAM_FIGURES:
            figures[name] = fixed.figures[name]
            figures[f"serving_{name}"] = serving_fixed.figures[name]
        figures["redteam_prompts"] = fixed.figures["redteam_prompts"]
        spent = [f.figures.get("redteam_s") for f in (fixed, serving_fixed) if f.measured]
        figures["redteam_s"] = round(sum(x for x in spent if x is not None), 2)
    return figures


def _reused(serving_fixed: FixedFigures, sets: EvalSets, generated: int) -> dict[str, str]:
    """Each serving figure read back instead of measured, with its source; ``generated`` sample
    answers were missing from it and generated in this run."""
    if serving_fixed.measured:
        return {}
    names = ["reference_logprob", "perplexity"]
    if sets.redteam is not None:
        names += list(REDTEAM_FIGURES)
    reused = {f"serving_{n}": serving_fixed.source_of(n) for n in names}
    # Sample figures come from the stored answers (and their NLL under the base) of the same questions.
    source = serving_fixed.source
    if generated:
        source += f" ({generated} of {len(sets.sample_questions)} answers generated in this run)"
    reused.update({f"serving_{n}": source for n in SAMPLE_FIGURES})
    return reused
