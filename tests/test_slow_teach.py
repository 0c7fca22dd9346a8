"""On the real embedded model (SmolLM2-135M-Instruct): one round of edits is served and teaches a house style.

A clinician edits 20 of the base model's answers into one house style, through the service: a
fixed heading, the answer, and a closing safety line. The 20th edit triggers a round in the
trainer process with the app's default recipe and gate; the new version must pass the gate and be
hot-swapped into serving with no restart. The edited answers must be more likely under it than
under the base, and questions nobody edited must come back in the style, without loops, with the
probe perplexity within the gate's 10%. The service's clinical-text judge (``clinical_text``, the
check every edit goes through) must tell word salad from real answers, styled or not. (``make bench`` runs the full teaching
benchmark: three styles, three rounds each, and two poisoned rounds; see ``hitl_app/bench/teach.py``.)
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from hitl_app.evaluation.answer_quality import has_loop

pytestmark = pytest.mark.slow

TRAIN, HELD_OUT = 20, 10
ROUND_TIMEOUT_S = 900


def styled(answer: str) -> str:
    return f"In brief:\n{answer}\nGet help fast: if it gets worse, contact a doctor today."


def in_style(text: str) -> bool:
    return text.lstrip().startswith("In brief:")


def test_a_round_of_edits_is_served_and_teaches_a_style(embedded_settings, embedded_base: Path) -> None:
    from peft import PeftModel

    from hitl_app.app import create_service
    from hitl_app.bench.teach import shipped_words, word_salad
    from hitl_app.core.chat import chat_prompt
    from hitl_app.evaluation.evalsets import load_patient_questions
    from hitl_app.evaluation.greedy import greedy_answers
    from hitl_app.evaluation.logprobs import completion_logprob
    from hitl_app.feedback.holdout import is_held_out
    from hitl_app.feedback.records import BASE_VERSION, Generation, Sampling
    from hitl_app.feedback.training_rows import prompt_messages
    from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
    from hitl_app.service.service import Caller

    settings = embedded_settings(
        candidates=1,
        temperature=0.0,
        max_new_tokens=64,
        retrain_threshold=TRAIN,
        compile_decode=False,  # measured in test_fastpath's slow test; compiling here would slow the round
        reward_model="off",  # the reward model's slow test is test_slow_preference's
    )
    pool = [(q.question, q.answer) for q in load_patient_questions()]
    random.Random(7).shuffle(pool)
    train, held = pool[:TRAIN], [q for q, _ in pool[TRAIN : TRAIN + HELD_OUT]]
    tokenizer = load_tokenizer(embedded_base)
    model = load_base(embedded_base, LoadOptions(device="cpu"))

    def answers(m, questions: list[str]) -> list[str]:
        return [a.text for a in greedy_answers(m, tokenizer, [chat_prompt(q, settings.system_prompt) for q in questions], 64)]

    before = answers(model, held)
    base_loops = sum(map(has_loop, before)) / len(before)
    assert not any(map(in_style, before))

    service = create_service(settings)
    try:
        # The judge every edit goes through (calibrated on the base at its first use): word salad
        # does not read as clinical text; reference answers, styled or not, do.
        rng, words = random.Random(0), shipped_words()
        salad = [service.models.clinical_text_nll(q, word_salad(rng, words)) for q, _ in train[:6]]
        real = [service.models.clinical_text_nll(q, text) for q, a in train[:6] for text in (a, styled(a))]
        assert not any(judge.reads_as_clinical(nll) for nll, judge in salad), salad
        assert all(judge.reads_as_clinical(nll) for nll, judge in real), real

        # The base's own greedy answers, as the app gives them at temperature 0, batched here to
        # save minutes; the edits go through the service, whose 20th starts the round.
        caller = Caller("dr-test", "clinician")
        sampling = Sampling(do_sample=False, temperature=0.0, top_p=0.9, max_new_tokens=64)
        generations = []
        for (question, reference), own in zip(train, answers(model, [q for q, _ in train])):
            gen = Generation(reviewer=caller.username, prompt=question, system_prompt=settings.system_prompt,
                             candidates=[own], version=BASE_VERSION, sampling=sampling, prompt_tokens=0)
            service.store.append(gen)
            service.edit(gen.id, styled(reference), caller)
            generations.append(gen)

        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while service.models.version != "v0001":
            trainer = service.trainer.status()
            assert trainer.state != "failed", trainer.last_error
            assert time.monotonic() < deadline, f"v0001 not served in time; trainer: {trainer}"
            time.sleep(0.5)
        assert service.ask(held[0], caller).version == "v0001"
        registry = service.registry
        held_back_edits = sum(is_held_out(j, settings.holdout_fraction) for j in service.ledger.judgements())
    finally:
        service.models.close()
        service.trainer.stop()

    manifest = registry.manifest("v0001")
    # The edits the hold-out set aside are the evaluation's, not the training's.
    assert manifest.parent == BASE_VERSION and manifest.metrics.rows["sft"] == TRAIN - held_back_edits
    assert manifest.metrics.train_loss_after < manifest.metrics.train_loss_before
    assert not manifest.held_back, manifest.gate
    assert registry.active().version == "v0001"
    evaluation = manifest.evaluation
    assert evaluation.perplexity <= 1.10 * evaluation.serving_perplexity
    assert evaluation.loop_rate <= evaluation.serving_loop_rate + settings.gate_max_loop_rise

    tuned = PeftModel.from_pretrained(model, str(registry.adapter_dir("v0001")))
    edits = [styled(reference) for _, reference in train]
    taught = [completion_logprob(tuned, tokenizer, prompt_messages(g), e) for g, e in zip(generations, edits)]
    with tuned.disable_adapter():
        untaught = [completion_logprob(tuned, tokenizer, prompt_messages(g), e) for g, e in zip(generations, edits)]
    assert sum(taught) / TRAIN > sum(untaught) / TRAIN, (taught, untaught)

    after = answers(tuned, held)
    adoption = sum(map(in_style, after)) / len(after)
    loops = sum(map(has_loop, after)) / len(after)
    assert adoption >= 0.5, after
    assert loops <= base_loops + 0.1, after
