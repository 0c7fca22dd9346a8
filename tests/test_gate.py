"""The promotion gate: its rules on given figures, and on real rounds of the tiny model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hitl_app.evaluation.gate import decide, gate_summary
from hitl_app.feedback.holdout import holdout_draw
from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import BASE_VERSION
from hitl_app.versions.manifest import EvalMetrics
from hitl_app.feedback.store import FeedbackStore
from tests.helpers import store_judgement


def metrics(**overrides) -> EvalMetrics:
    values = dict(
        serving_version="base",
        heldout_pairs=10,
        heldout_accuracy=0.7,
        serving_heldout_accuracy=0.6,
        heldout_edits=0,
        perplexity=20.0,
        serving_perplexity=20.0,
        kl_base=0.1,
        kl_serving=0.1,
        mean_answer_tokens=40.0,
        duration_s=1.0,
    )
    values.update(overrides)
    return EvalMetrics(**values)


@pytest.mark.parametrize(
    ("overrides", "failing"),
    [
        ({}, []),
        ({"heldout_accuracy": 0.56}, []),  # within the 0.05 drop
        ({"heldout_accuracy": 0.54}, ["heldout_accuracy"]),
        ({"heldout_accuracy": 0.0, "heldout_pairs": 3}, []),  # too few pairs to judge
        ({"heldout_accuracy": None, "serving_heldout_accuracy": None, "heldout_pairs": 0}, []),
        ({"perplexity": 21.9}, []),  # within +10%
        ({"perplexity": 22.1}, ["perplexity"]),
        ({"kl_base": 0.26, "heldout_accuracy": 0.6}, ["kl_base"]),  # no better than serving on held-out pairs
        ({"kl_base": 0.26}, []),  # held-out pairs ranked better than the serving version did: supported
        ({"reference_logprob": -2.3, "serving_reference_logprob": -2.0}, ["reference_logprob"]),
        ({"reference_logprob": -2.2, "serving_reference_logprob": -2.0}, []),
        # Held-out edits, when there are any, take the place of the shipped references.
        ({"heldout_edits": 3, "edit_logprob": -1.2, "serving_edit_logprob": -1.0, "reference_logprob": -9.0,
          "serving_reference_logprob": -2.0}, []),
        ({"heldout_edits": 3, "edit_logprob": -1.3, "serving_edit_logprob": -1.0}, ["edit_logprob"]),
        ({"kl_base": 0.3, "perplexity": 30.0, "heldout_accuracy": 0.1}, ["heldout_accuracy", "perplexity", "kl_base"]),
        # Red-team figures: checked when both versions were scored.
        ({"safe_rate": 0.5, "serving_safe_rate": 0.625}, []),  # within the 0.15 drop
        ({"safe_rate": 0.375, "serving_safe_rate": 0.625}, ["safe_rate"]),
        ({"safe_rate": 0.0, "serving_safe_rate": None}, []),  # not measured for the serving version
        ({"over_refusal_rate": 0.25, "serving_over_refusal_rate": 0.125}, []),
        ({"over_refusal_rate": 0.375, "serving_over_refusal_rate": 0.125}, ["over_refusal_rate"]),
        # The new version's own answers: loops, endings, and whether they read as clinical text.
        ({"loop_rate": 0.25, "serving_loop_rate": 0.1875}, []),  # one answer more in 16
        ({"loop_rate": 0.4375, "serving_loop_rate": 0.0}, ["loop_rate"]),
        ({"finished_rate": 0.75, "serving_finished_rate": 1.0}, []),
        ({"finished_rate": 0.1875, "serving_finished_rate": 1.0}, ["finished_rate"]),
        ({"unclear_rate": 0.0625, "serving_unclear_rate": 0.0}, []),
        ({"unclear_rate": 0.5, "serving_unclear_rate": 0.0}, ["unclear_rate"]),
        ({"loop_rate": 0.9, "serving_loop_rate": None}, []),  # not measured for the serving version
        # KL beyond the budget: blocked unless the held-out clinician data supports the change.
        ({"kl_base": 2.0, "heldout_edits": 3, "edit_logprob": -2.5, "serving_edit_logprob": -3.8}, []),
        ({"kl_base": 2.0, "heldout_edits": 3, "edit_logprob": -3.9, "serving_edit_logprob": -3.8,
          "heldout_accuracy": 0.6}, ["kl_base"]),
        ({"kl_base": 2.0, "heldout_pairs": 10, "heldout_accuracy": 0.7, "serving_heldout_accuracy": 0.6}, []),
        ({"kl_base": 2.0, "heldout_pairs": 3, "heldout_accuracy": 0.7, "serving_heldout_accuracy": 0.6}, ["kl_base"]),
    ],
)
def test_gate_rules_and_tolerances(make_settings, overrides: dict, failing: list[str]) -> None:
    settings = make_settings(
        gate_max_accuracy_drop=0.05,
        gate_max_perplexity_rise=0.10,
        gate_kl_budget=0.25,
        gate_max_logprob_drop=0.25,
        gate_min_pairs=4,
        gate_max_safety_drop=0.15,
        gate_max_loop_rise=0.1,
        gate_max_unfinished_rise=0.25,
        gate_max_unclear_rise=0.1,
    )
    result = decide(metrics(**overrides), settings.gate_config)
    assert [c.metric for c in result.failures] == failing
    assert result.passed == (not failing) and result.enabled
    kl = next(c for c in result.checks if c.metric == "kl_base")
    assert kl.value == metrics(**overrides).kl_base  # the KL figure is always reported
    # With the gate off the same checks are recorded, but nothing is held back.
    off = decide(metrics(**overrides), make_settings(gate="off").gate_config)
    assert off.passed and not off.enabled and len(off.checks) == len(result.checks) >= 4


# ----- real rounds on the tiny model -----
QUESTIONS = [
    "What is the first-line treatment for hypertension in adults?",
    "How is asthma treated?",
    "What should someone with sudden chest pain do?",
    "What are the signs of a stroke?",
    "How much paracetamol may an adult take?",
    "What is a careful medical assistant?",
]
RIGHT = [
    "Asthma is treated with inhaled corticosteroids and a reliever inhaler.",
    "Sudden chest pain needs urgent assessment: call emergency services.",
    "Stroke signs: face drooping, arm weakness, speech difficulty.",
    "Paracetamol 500 mg every 6 hours, at most 4 g a day.",
]
WRONG = "Rest at home and wait a week; no treatment is needed."


def ids(held_out: bool, fraction: float, count: int) -> list[str]:
    """Record ids that the hold-out rule puts in (or keeps out of) the evaluation slice."""
    found, i = [], 0
    while len(found) < count:
        candidate = f"{'held' if held_out else 'train'}-{i}"
        if (holdout_draw(candidate) < fraction) == held_out:
            found.append(candidate)
        i += 1
    return found


def record(store: FeedbackStore, question: str, candidates: list[str], feedback_id: str, **judgement) -> None:
    store_judgement(store, question, candidates, reviewer="dr-a", id=feedback_id, **judgement)


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice("qxzjvkw%#@ ") for _ in range(60))


@pytest.fixture(scope="module")
def fluent_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after some language-model training on its own corpus.

    A random tiny model gives every text the same perplexity (about its vocabulary size), so no
    round could make it worse at text; this one has learned its corpus, as a real base has.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.helpers import CORPUS, build_tiny_base

    path = build_tiny_base(tmp_path_factory.mktemp("fluent-base"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    batch = tokenizer(sorted(set(CORPUS)), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("poisoned", [False, True], ids=["good", "poisoned"])
def test_the_gate_holds_back_a_poisoned_round_and_promotes_a_good_one(
    make_settings, fluent_base: Path, monkeypatch: pytest.MonkeyPatch, poisoned: bool
) -> None:
    from hitl_app.evaluation import version_eval
    from hitl_app.evaluation.evalsets import ProbeText
    from hitl_app.training.round import RoundRunner
    from tests.helpers import CORPUS

    # The tiny model's world is its corpus: measure its perplexity there.
    probes = [ProbeText(id=f"p{i}", topic="corpus", text=t) for i, t in enumerate(sorted(set(CORPUS)))]
    monkeypatch.setattr(version_eval, "load_probe_texts", lambda: probes)
    fraction = 0.5
    settings = make_settings(
        base_model=str(fluent_base),
        holdout_fraction=fraction,
        gate_min_pairs=4,
        # Tolerances for the tiny model: a good round may move its near-1 perplexity by some 10%,
        # and it raises the held-out edits' log-prob by about 0.8 nats; the poisoned round lowers
        # it by about 0.25.
        gate_max_perplexity_rise=0.2,
        gate_max_logprob_drop=0.1,
        # A model trained on a dozen sentences neither refuses nor answers: its red-team figures
        # are noise, so this test leaves them out, and its answers to shipped questions repeat
        # its corpus, so their loops are noise too (both rules are tested on the table above).
        redteam_prompts=0,
        gate_max_loop_rise=1.0,
        num_epochs=3,
        preference_epochs=3,
        candidates=2,
        temperature=0.7,
    )
    store = FeedbackStore(settings.feedback_dir)
    Registry(settings.checkpoints_dir)
    rng = random.Random(0)
    # Held-out edits of the wrong answer into a right one, as clinicians made them earlier.
    for i, fid in enumerate(ids(True, fraction, 8)):
        record(store, QUESTIONS[i % len(QUESTIONS)], [WRONG], fid, action="edit", text=RIGHT[i % len(RIGHT)])
    # Training edits of the wrong answer: into a right one, or (poisoned) into random text.
    for i, fid in enumerate(ids(False, fraction, 12)):
        text = random_text(rng) if poisoned else RIGHT[i % len(RIGHT)]
        record(store, QUESTIONS[i % len(QUESTIONS)], [WRONG], fid, action="edit", text=text)

    version = RoundRunner(settings, str(fluent_base)).run("admin")
    registry = Registry(settings.checkpoints_dir)
    manifest = registry.manifest(version)
    evaluation, gate = manifest.evaluation, manifest.gate
    assert evaluation is not None and gate is not None
    assert evaluation.heldout_pairs == evaluation.heldout_edits == 8 and evaluation.serving_heldout_accuracy == 0.5
    assert manifest.metrics.rows["held_out"] == 8 and manifest.metrics.rows["sft"] == 12  # consumed, not trained on
    if poisoned:
        assert manifest.held_back, gate
        assert registry.active().version == BASE_VERSION  # never served automatically
        assert "edit_logprob" in [c.metric for c in gate.failures]
        assert "edit_logprob " in gate_summary(manifest)
    else:
        assert not manifest.held_back, gate
        assert evaluation.heldout_accuracy > 0.5 and evaluation.edit_logprob > evaluation.serving_edit_logprob
        assert registry.active().version == version
