"""Evaluation of a freshly trained version against the serving one, in the trainer, before publishing.

Data (see the README's "Evaluation" section):

- held-out feedback (``holdout``): preference pairs from held-out edits, rankings and votes, and
  the edited answers of held-out edits, the most recent ``MAX_HELDOUT_PAIRS`` / ``MAX_HELDOUT_EDITS``;
- the shipped evaluation questions (``hitl_app/data/eval_questions.jsonl``): the log-prob of their
  reference answers, a few prompts for the KL estimate, and a few greedy answers for their length;
- the shipped probe texts (``hitl_app/data/probe_texts.jsonl``): perplexity.

One ``PeftModel`` plays every model: the new adapter (``default``), the serving version's adapter
loaded beside it as ``serving`` (or the base, with adapters disabled), and the base. Each figure
the gate compares is measured for the new and the serving version in the same run, on the same data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .answer_quality import answer_quality
from ..core.chat import Message, chat_prompt
from .clinical_text import ClinicalTextJudge, reply_nll
from ..core.config import EvaluationConfig
from .evalsets import EvalQuestion, load_eval_questions, load_probe_texts
from .model_view import ModelView
from .greedy import greedy_answers
from .logprobs import mean_completion_logprob, perplexity
from .preference_accuracy import preference_accuracy
from .sampled_kl import sample_kl
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


@dataclass
class VersionReport:
    """What the evaluation of a new version found: its figures, and the answers they came from."""

    metrics: EvalMetrics
    samples: list[SampleAnswer]


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
    serving_samples: list[SampleAnswer] | None = None,
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
        serving_samples: the serving version's own sample answers (from its manifest), reused
            when they answer the same questions the same way; otherwise it answers them again.
    """
    started = time.perf_counter()
    report = progress or (lambda f, m: None)
    if serving_dir is not None:
        model.load_adapter(str(serving_dir), adapter_name=SERVING_ADAPTER, is_trainable=False)
    try:
        new = ModelView.adapter(model, "default")
        base = ModelView.base(model)
        old = base if serving_dir is None else ModelView.adapter(model, SERVING_ADAPTER)
        figures: dict = {"serving_version": serving}

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
        report(0.15, "evaluating: held-out edits and reference answers")
        figures["heldout_edits"] = len(sets.edit_texts)
        if sets.edit_texts:
            figures["edit_logprob"] = mean_completion_logprob(new, tokenizer, sets.edit_prompts, sets.edit_texts)
            figures["serving_edit_logprob"] = mean_completion_logprob(old, tokenizer, sets.edit_prompts, sets.edit_texts)
        figures["reference_logprob"] = mean_completion_logprob(new, tokenizer, sets.reference_prompts, sets.reference_texts)
        figures["serving_reference_logprob"] = mean_completion_logprob(
            old, tokenizer, sets.reference_prompts, sets.reference_texts
        )
        report(0.3, "evaluating: probe perplexity")
        figures["perplexity"] = perplexity(new, tokenizer, sets.probe_texts).perplexity
        figures["serving_perplexity"] = perplexity(old, tokenizer, sets.probe_texts).perplexity
        report(0.45, "evaluating: KL to the base")
        kl_base = sample_kl(new, base, tokenizer, sets.kl_prompts, KL_NEW_TOKENS, seed=config.seed)
        figures["kl_base"] = kl_base.kl_per_token
        if serving_dir is None:
            figures["kl_serving"] = kl_base.kl_per_token
        else:
            report(0.65, "evaluating: KL to the serving version")
            figures["kl_serving"] = sample_kl(
                new, old, tokenizer, sets.kl_prompts, KL_NEW_TOKENS, seed=config.seed
            ).kl_per_token
        report(0.8, "evaluating: sample answers")
        judge = judge or ClinicalTextJudge.calibrate(base, tokenizer, sets.system_prompt)
        samples = _sample_answers(new, old, tokenizer, sets, serving_samples)
        figures.update(_sample_figures(base, tokenizer, sets, samples, judge))
        if sets.redteam is not None:
            report(0.9, "evaluating: red-team prompts")
            figures.update(_redteam_figures(new, old, tokenizer, sets.redteam, config.system_prompt))
    finally:
        if SERVING_ADAPTER in model.peft_config:
            model.delete_adapter(SERVING_ADAPTER)
        model.set_adapter("default")
    figures["duration_s"] = round(time.perf_counter() - started, 2)
    metrics = EvalMetrics(**figures)
    log.info("evaluation against %s: %s", serving, metrics.model_dump(exclude={"serving_version"}))
    return VersionReport(metrics=metrics, samples=samples)


def _sample_answers(
    new: ModelView, old: ModelView, tokenizer, sets: EvalSets, serving_samples: list[SampleAnswer] | None
) -> list[SampleAnswer]:
    """Both versions' greedy answers to the sample questions; the serving one's reused when it can be."""
    prompts = sets.sample_prompts
    mine = greedy_answers(new, tokenizer, prompts, SAMPLE_MAX_TOKENS)
    reusable = serving_samples is not None and [
        (s.question_id, s.system_prompt, s.max_new_tokens) for s in serving_samples
    ] == [(q.id, sets.system_prompt, SAMPLE_MAX_TOKENS) for q in sets.sample_questions]
    if reusable:
        theirs = [(s.answer, s.finished) for s in serving_samples]
    else:
        theirs = [(a.text, a.tokens < SAMPLE_MAX_TOKENS) for a in greedy_answers(old, tokenizer, prompts, SAMPLE_MAX_TOKENS)]
    return [
        SampleAnswer(
            question_id=q.id,
            question=q.question,
            system_prompt=sets.system_prompt,
            max_new_tokens=SAMPLE_MAX_TOKENS,
            answer=a.text,
            finished=a.tokens < SAMPLE_MAX_TOKENS,
            serving_answer=their_text,
            serving_finished=their_finished,
        )
        for q, a, (their_text, their_finished) in zip(sets.sample_questions, mine, theirs)
    ]


def _sample_figures(
    base: ModelView, tokenizer, sets: EvalSets, samples: list[SampleAnswer], judge: ClinicalTextJudge
) -> dict:
    """Form (loops, endings, repetition) and fluency (the base model's reading) of both versions' answers."""
    prompts = sets.sample_prompts
    figures: dict = {"sample_answers": len(samples), "clinical_threshold": judge.threshold}
    for prefix, texts, finished in (
        ("", [s.answer for s in samples], [s.finished for s in samples]),
        ("serving_", [s.serving_answer for s in samples], [s.serving_finished for s in samples]),
    ):
        quality = answer_quality(texts, finished)
        nll = reply_nll(base, tokenizer, prompts, texts)
        figures[f"{prefix}loop_rate"] = quality.loop_rate
        figures[f"{prefix}finished_rate"] = quality.finished_rate
        figures[f"{prefix}repeated_ngram_rate"] = quality.repeated_ngram_rate
        figures[f"{prefix}distinct_2"] = quality.distinct_2
        figures[f"{prefix}answer_nll"] = sum(nll) / len(nll)
        figures[f"{prefix}unclear_rate"] = sum(not judge.reads_as_clinical(x) for x in nll) / len(nll)
    figures["mean_answer_tokens"] = sum(len(tokenizer(s.answer, add_special_tokens=False)["input_ids"]) for s in samples) / len(samples)
    return figures


def _redteam_figures(new: ModelView, old: ModelView, tokenizer, prompts: RedTeamSet, system_prompt: str) -> dict:
    """The new and the serving version's red-team figures, on the same prompts."""
    checker = SafetyChecker()
    mine = score_version(new, tokenizer, prompts, checker, system_prompt)
    theirs = score_version(old, tokenizer, prompts, checker, system_prompt)
    return {
        "redteam_prompts": len(prompts.adversarial),
        "safe_rate": mine.safe_rate,
        "serving_safe_rate": theirs.safe_rate,
        "over_refusal_rate": mine.over_refusal_rate,
        "serving_over_refusal_rate": theirs.over_refusal_rate,
        "medication_flag_rate": mine.medication_flag_rate,
        "serving_medication_flag_rate": theirs.medication_flag_rate,
        "redteam_s": round(mine.duration_s + theirs.duration_s, 2),
    }
