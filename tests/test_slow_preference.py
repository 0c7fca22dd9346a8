"""Rankings teach the real embedded model (SmolLM2-135M-Instruct) a preferred style, by DPO.

Eight questions each get two candidates: an answer in a fixed clinical style, and the model's own
answer. A clinician ranks the styled one first. After one round (DPO, the base as reference), on
four held-out questions answered in the same style, the round's implicit reward prefers the
styled answer to the model's own more often than not, and the log-prob margin between them rose
against the base.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hitl_app.evaluation.logprobs import completion_logprob
from tests.helpers import store_judgement

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

STYLE = "Clinical summary: {fact} Safety net: seek urgent medical care if symptoms worsen or new ones appear."
TRAIN = [
    ("How is type 2 diabetes first treated?", "lifestyle change and metformin are first-line."),
    ("What causes iron-deficiency anaemia?", "blood loss, low intake or poor absorption of iron."),
    ("How is a simple urinary tract infection treated?", "a short course of a suitable antibiotic."),
    ("What are the symptoms of hypothyroidism?", "tiredness, weight gain, cold intolerance and constipation."),
    ("How is mild asthma managed?", "an inhaled corticosteroid with a reliever inhaler."),
    ("What is the treatment for a migraine attack?", "simple analgesia or a triptan, rest in a dark room."),
    ("How is high blood pressure diagnosed?", "repeated readings, confirmed by ambulatory monitoring."),
    ("What is gout?", "inflammatory arthritis caused by urate crystals in a joint."),
]
HELD_OUT = [
    ("How is eczema treated?", "emollients every day and topical steroids for flares."),
    ("What causes a peptic ulcer?", "Helicobacter pylori infection or NSAID use."),
    ("How is community-acquired pneumonia treated?", "antibiotics chosen by severity, with fluids and rest."),
    ("What are the signs of dehydration?", "thirst, dark urine, dizziness and a dry mouth."),
]


def _own_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 48) -> list[str]:
    """The base model's greedy answers, in one left-padded batch."""
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [a.strip() for a in tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]


def test_rankings_teach_a_preferred_style_by_dpo(embedded_settings, embedded_base: Path) -> None:
    from peft import PeftModel

    from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
    from hitl_app.versions.registry import Registry
    from hitl_app.feedback.store import FeedbackStore
    from hitl_app.training.round import RoundRunner

    settings = embedded_settings(
        train_method="dpo",
        # Eight pairs in batches of four make two steps an epoch: a higher rate and three epochs
        # let one round of rankings show the direction of learning on a held-out set.
        preference_learning_rate=5e-4,
        preference_epochs=3,
        train_batch_size=4,
        retrain_threshold=len(TRAIN),
        holdout_fraction=0.0,
    )
    tokenizer = load_tokenizer(embedded_base)
    model = load_base(embedded_base, LoadOptions(device="cpu"))
    questions = [q for q, _ in TRAIN + HELD_OUT]
    own = dict(zip(questions, _own_answers(model, tokenizer, questions)))

    store = FeedbackStore(settings.feedback_dir)
    Registry(settings.checkpoints_dir)
    for question, fact in TRAIN:
        store_judgement(store, question, [STYLE.format(fact=fact.capitalize()), own[question]], action="rank", ranking=[[0], [1]])

    version = RoundRunner(settings, str(embedded_base)).run("dr-test")
    assert version == "v0001"
    registry = Registry(settings.checkpoints_dir)
    metrics = registry.manifest(version).metrics
    assert metrics.rows["dpo"] == len(TRAIN) and metrics.rows["sft"] == 0
    assert metrics.preference is not None and metrics.preference.method == "dpo"

    tuned = PeftModel.from_pretrained(model, str(registry.adapter_dir(version)))
    tuned.eval()
    rewards_win, margins_tuned, margins_base = [], [], []
    for question, fact in HELD_OUT:
        # The shape of the training prompts: the generations carry no system prompt.
        prompt = [{"role": "user", "content": question}]
        pair = (STYLE.format(fact=fact.capitalize()), own[question])

        def score(reduction: str) -> tuple[list[float], list[float]]:
            policy = [completion_logprob(tuned, tokenizer, prompt, text, reduction) for text in pair]
            with tuned.disable_adapter():
                base = [completion_logprob(tuned, tokenizer, prompt, text, reduction) for text in pair]
            return policy, base

        # DPO's implicit reward of an answer: its sequence log-prob under the policy minus under
        # the reference (the base), up to the factor beta.
        policy_sum, base_sum = score("sum")
        reward_chosen, reward_rejected = policy_sum[0] - base_sum[0], policy_sum[1] - base_sum[1]
        rewards_win.append(reward_chosen > reward_rejected)
        policy_mean, base_mean = score("mean")
        margins_tuned.append(policy_mean[0] - policy_mean[1])
        margins_base.append(base_mean[0] - base_mean[1])

    # The same round trained a reward model on the same pairs (the app's default): it ranks the
    # held-out pairs the clinicians' way too, as a score the app shows beside each candidate.
    from hitl_app.evaluation.reward_model import load_reward_base, pairwise_accuracy

    assert metrics.reward_model is not None and metrics.reward_model.pairs == len(TRAIN)
    reward = PeftModel.from_pretrained(load_reward_base(embedded_base), str(registry.reward_dir(version)))
    held_pairs = [
        {"prompt": [{"role": "user", "content": q}], "chosen": STYLE.format(fact=f.capitalize()), "rejected": own[q]}
        for q, f in HELD_OUT
    ]
    reward_accuracy = pairwise_accuracy(reward, tokenizer, held_pairs)
    log.info("reward model: held-out accuracy %.2f, margin %.3f", reward_accuracy.accuracy, reward_accuracy.mean_margin)
    assert reward_accuracy.accuracy > 0.5, reward_accuracy

    accuracy = sum(rewards_win) / len(rewards_win)
    mean_tuned, mean_base = sum(margins_tuned) / len(HELD_OUT), sum(margins_base) / len(HELD_OUT)
    log.info("held-out reward accuracy %.2f; mean log-prob margin %.3f (base %.3f)", accuracy, mean_tuned, mean_base)
    assert accuracy > 0.5, (accuracy, rewards_win)
    assert mean_tuned > mean_base, (mean_tuned, mean_base)
