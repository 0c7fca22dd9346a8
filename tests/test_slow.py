"""End to end on the real embedded model (SmolLM2-135M-Instruct): clinicians' edits teach it.

Four edits with a distinctive answer trigger a retrain in the trainer process; v0001 is then
served, and the clinicians' answers are more likely under v0001 than under the base.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hitl_app.feedback.training_rows import prompt_messages
from hitl_app.evaluation.logprobs import completion_logprob

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What should a patient with sudden crushing chest pain do?",
    "How should a suspected stroke be handled at home?",
    "What is the first step for a child with anaphylaxis after a bee sting?",
    "What should someone do if they suddenly cannot breathe properly?",
]
DISTINCTIVE = "RED FLAG PROTOCOL: call emergency services now, stay with the patient, and note the time symptoms began."


def test_edits_on_the_embedded_model_raise_the_logprob_of_the_edited_answers(embedded_settings, embedded_base: Path) -> None:
    from hitl_app.app import create_service
    from hitl_app.service.service import Caller

    settings = embedded_settings(
        retrain_threshold=len(QUESTIONS),
        holdout_fraction=0.0,
        max_new_tokens=16,
        compile_decode=False,  # measured in test_fastpath's slow test; compiling here would slow the round
        # One answer taught for four different emergencies is learnt for every question, benign ones
        # too; the gate rightly holds that back (tests/test_slow_teach.py has a round it serves).
        gate="off",
        reward_model="off",  # the reward model's slow test is test_slow_preference's
    )
    service = create_service(settings)
    try:
        caller = Caller("dr-test", "clinician")
        generations = []
        for question in QUESTIONS:
            gen = service.ask(question, caller)
            assert gen.version == "base"
            service.edit(gen.id, DISTINCTIVE, caller)
            generations.append(gen)

        # A round is 12 SFT steps, 4 DPO steps and the evaluation: a few minutes on 2 busy cores.
        deadline = time.monotonic() + 900
        while service.models.version != "v0001":
            trainer = service.trainer.status()
            assert trainer.state != "failed", trainer.last_error
            assert time.monotonic() < deadline, f"v0001 not served in time; trainer: {trainer}"
            time.sleep(0.5)
        assert service.ask("Is aspirin safe in pregnancy?", caller).version == "v0001"

        manifest = service.registry.manifest("v0001")
        assert manifest.parent == "base" and manifest.metrics.rows["sft"] == len(QUESTIONS)
        assert manifest.metrics.train_loss_after < manifest.metrics.train_loss_before

        model, tokenizer = service.models.model, service.models.tokenizer
        tuned = [completion_logprob(model, tokenizer, prompt_messages(g), DISTINCTIVE) for g in generations]
        with model.disable_adapter():
            base = [completion_logprob(model, tokenizer, prompt_messages(g), DISTINCTIVE) for g in generations]
        mean_tuned, mean_base = sum(tuned) / len(tuned), sum(base) / len(base)
        assert mean_tuned > mean_base, (mean_tuned, mean_base)
    finally:
        service.models.close()
        service.trainer.stop()
