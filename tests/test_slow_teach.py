"""On the real embedded model (SmolLM2-135M-Instruct): one round of edits teaches a house style.

A clinician edits 20 of the base model's answers into one house style: a fixed heading, the
answer, and a closing safety line. One round with the app's default recipe and gate must be
served, and questions nobody edited must come back in the style, without loops, with the probe
perplexity within the gate's 10%. The base model's reading of text (``clinical_text``) must tell
word salad from real answers, styled or not. (``make bench`` runs the full teaching benchmark:
three styles, three rounds each, and two poisoned rounds; see ``hitl_app/bench/teach.py``.)
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hitl_app.evaluation.answer_quality import has_loop

pytestmark = pytest.mark.slow

TRAIN, HELD_OUT = 20, 10


def styled(answer: str) -> str:
    return f"In brief:\n{answer}\nGet help fast: if it gets worse, contact a doctor today."


def in_style(text: str) -> bool:
    return text.lstrip().startswith("In brief:")


def test_one_round_of_edits_teaches_a_style_and_the_judge_reads_clinical_text(embedded_settings, embedded_base: Path) -> None:
    from peft import PeftModel

    from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
    from hitl_app.bench.teach import shipped_words, word_salad
    from hitl_app.core.chat import chat_prompt
    from hitl_app.evaluation.clinical_text import ClinicalTextJudge, reply_nll
    from hitl_app.evaluation.evalsets import load_patient_questions
    from hitl_app.evaluation.greedy import greedy_answers
    from hitl_app.versions.registry import Registry
    from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling
    from hitl_app.feedback.store import FeedbackStore
    from hitl_app.training.round import RoundRunner

    settings = embedded_settings(
        candidates=1,
        temperature=0.0,
        max_new_tokens=64,
        reward_model="off",  # the reward model's slow test is test_slow_preference's
    )
    pool = [(q.question, q.answer) for q in load_patient_questions()]
    random.Random(7).shuffle(pool)
    train, held = pool[:TRAIN], [q for q, _ in pool[TRAIN : TRAIN + HELD_OUT]]
    tokenizer = load_tokenizer(embedded_base)
    model = load_base(embedded_base, LoadOptions(device="cpu"))

    def answers(m, questions: list[str]) -> list[str]:
        return [a.text for a in greedy_answers(m, tokenizer, [chat_prompt(q, settings.system_prompt) for q in questions], 64)]

    # The judge: word salad does not read as clinical text; reference answers, styled or not, do.
    judge = ClinicalTextJudge.calibrate(model, tokenizer, settings.system_prompt)
    rng, words = random.Random(0), shipped_words()
    questions = [q for q, _ in train[:6]]
    prompts = [chat_prompt(q, settings.system_prompt) for q in questions]
    salad = reply_nll(model, tokenizer, prompts, [word_salad(rng, words) for _ in questions])
    real = reply_nll(model, tokenizer, prompts * 2, [a for _, a in train[:6]] + [styled(a) for _, a in train[:6]])
    assert not any(judge.reads_as_clinical(x) for x in salad), (salad, judge)
    assert all(judge.reads_as_clinical(x) for x in real), (real, judge)

    before = answers(model, held)
    base_loops = sum(map(has_loop, before)) / len(before)
    assert not any(map(in_style, before))

    store = FeedbackStore(settings.feedback_dir)
    sampling = Sampling(do_sample=False, temperature=0.0, top_p=0.9, max_new_tokens=64)
    for (question, reference), own in zip(train, answers(model, [q for q, _ in train])):
        gen = Generation(reviewer="dr-test", prompt=question, system_prompt=settings.system_prompt, candidates=[own],
                         version=BASE_VERSION, sampling=sampling, prompt_tokens=0)
        store.append(gen)
        store.append(Feedback(reviewer="dr-test", generation_id=gen.id, action="edit", text=styled(reference)))

    version = RoundRunner(settings, str(embedded_base)).run("dr-test")
    registry = Registry(settings.checkpoints_dir)
    manifest = registry.manifest(version)
    assert not manifest.held_back, manifest.gate
    assert registry.active().version == version
    evaluation = manifest.evaluation
    assert evaluation.perplexity <= 1.10 * evaluation.serving_perplexity
    assert evaluation.loop_rate <= evaluation.serving_loop_rate + settings.gate_max_loop_rise

    tuned = PeftModel.from_pretrained(model, str(registry.adapter_dir(version)))
    after = answers(tuned, held)
    adoption = sum(map(in_style, after)) / len(after)
    loops = sum(map(has_loop, after)) / len(after)
    assert adoption >= 0.5, after
    assert loops <= base_loops + 0.1, after
