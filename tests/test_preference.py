"""The preference stage: choose_method, and train_preference on TRL's DPO and KTO trainers (tiny model).

The trainer checks follow tests/test_trainer.py: snapshot the parameters, train, check the LoRA
weights moved and the base weights did not, and check TRL's figures are there and finite.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.training.preference import (
    MIN_KTO_ROWS,
    choose_method,
    kto_batch_size,
    train_preference,
)
from hitl_app.training.sft import TrainConfig, attach_adapter, train_sft
from hitl_app.versions.manifest import PreferenceMetrics

SYSTEM = "You are a careful medical assistant helping clinicians."
# (question, better answer, worse answer)
PAIRS = [
    ("How is asthma treated?", "Asthma is treated with inhaled corticosteroids and a reliever.", "Rest at home."),
    ("Is chest pain an emergency?", "Sudden chest pain needs urgent assessment: call emergency services.", "No, wait."),
    ("What are the signs of a stroke?", "Stroke signs: face drooping, arm weakness, speech difficulty.", "A headache."),
    ("How much paracetamol may an adult take?", "Paracetamol 500 mg every 6 hours, at most 4 g a day.", "Any dose."),
]
BETA = 0.1


def prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def dpo_rows(pairs=PAIRS) -> list[dict]:
    """Conversational preference rows, as examples.rows_for writes them."""
    return [{"prompt": prompt(q), "chosen": reply(good), "rejected": reply(bad)} for q, good, bad in pairs]


def kto_rows(labels: list[bool], pairs=PAIRS) -> list[dict]:
    """Unpaired rows: the better answer when the label is True, the worse one when False."""
    return [
        {"prompt": prompt(q), "completion": reply(good if label else bad), "label": label}
        for (q, good, bad), label in zip(pairs, labels)
    ]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_lora_moved_base_kept(model, before: dict[str, torch.Tensor]) -> None:
    after = dict(model.named_parameters())
    # TRL's frozen "ref" adapter is gone again: the model holds exactly the parameters it came with
    assert after.keys() == before.keys()
    assert list(model.peft_config) == ["default"]
    lora = [n for n in before if "lora_" in n]
    assert lora and all(".default." in n for n in lora)
    moved = [n for n in lora if not torch.equal(before[n], after[n])]
    assert set(moved) == set(lora), f"LoRA weights that did not move: {sorted(set(lora) - set(moved))}"
    for name, tensor in before.items():
        if name not in lora:
            assert torch.equal(tensor, after[name]), f"base weight {name} changed"
    # still trainable for a later stage, base still frozen
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora)


def assert_finite(*values: float | None) -> None:
    for value in values:
        assert value is not None and math.isfinite(value), value


@pytest.fixture
def cfg(make_settings) -> TrainConfig:
    settings = make_settings(num_epochs=2, preference_epochs=2, train_batch_size=2, lora_dropout=0.0)
    return TrainConfig.from_config(settings.training_config)


@pytest.fixture
def base(tiny_base: Path):
    torch.manual_seed(0)
    return load_base(tiny_base, LoadOptions(device="cpu"))


@pytest.fixture
def tokenizer(tiny_base: Path):
    return load_tokenizer(tiny_base)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What TRL's trainers look like when training starts: their ref_model and the model's adapters."""
    import trl

    seen: list[dict] = []
    for name in ("DPOTrainer", "KTOTrainer"):
        cls = getattr(trl, name)

        class Recording(cls):
            def train(self, *args, **kwargs):
                seen.append(
                    {
                        "trainer": type(self).__mro__[1].__name__,
                        "ref_model": self.ref_model,
                        "adapters": sorted(self.model.peft_config),
                        "batch_size": self.args.per_device_train_batch_size,
                        "checkpointing": self.model.get_base_model().is_activation_checkpointing,
                    }
                )
                return super().train(*args, **kwargs)

        monkeypatch.setattr(trl, name, Recording)
    return seen


# ----- choose_method -----
# (requested, pairs, labels) -> method; one label is too few for KTO's KL estimate
TABLE = {
    ("auto", 0, 0): None,
    ("auto", 0, 1): None,
    ("auto", 0, 3): "kto",
    ("auto", 3, 0): "dpo",
    ("auto", 3, 1): "dpo",
    ("auto", 3, 3): "dpo",
    ("sft", 0, 0): None,
    ("sft", 0, 1): None,
    ("sft", 0, 3): None,
    ("sft", 3, 0): None,
    ("sft", 3, 1): None,
    ("sft", 3, 3): None,
    ("dpo", 0, 0): None,
    ("dpo", 0, 1): None,
    ("dpo", 0, 3): None,
    ("dpo", 3, 0): "dpo",
    ("dpo", 3, 1): "dpo",
    ("dpo", 3, 3): "dpo",
    ("kto", 0, 0): None,
    ("kto", 0, 1): None,
    ("kto", 0, 3): "kto",
    ("kto", 3, 0): None,
    ("kto", 3, 1): None,
    ("kto", 3, 3): "kto",
}


@pytest.mark.parametrize(("requested", "pairs", "labels"), sorted(TABLE))
def test_choose_method(requested: str, pairs: int, labels: int) -> None:
    assert choose_method(requested, pairs, labels) == TABLE[(requested, pairs, labels)]


def test_choose_method_agrees_with_kto_minimum() -> None:
    assert MIN_KTO_ROWS == 2
    assert choose_method("kto", 0, MIN_KTO_ROWS - 1) is None
    assert choose_method("kto", 0, MIN_KTO_ROWS) == "kto"
    with pytest.raises(ValueError, match="at least 2"):
        kto_batch_size(MIN_KTO_ROWS - 1, 4)


def test_choose_method_refuses_unknown() -> None:
    with pytest.raises(ValueError, match="unknown training method 'ppo'"):
        choose_method("ppo", 3, 3)


@pytest.mark.parametrize(
    ("rows", "requested", "expected"),
    [(2, 4, 2), (3, 4, 3), (3, 2, 3), (4, 4, 4), (5, 4, 3), (8, 4, 4), (9, 4, 3), (20, 4, 4), (21, 4, 3), (6, 1, 2)],
)
def test_kto_batch_size_never_leaves_a_row_alone(rows: int, requested: int, expected: int) -> None:
    size = kto_batch_size(rows, requested)
    assert size == expected
    assert size >= 2 and rows % size != 1


# ----- DPO -----
def test_dpo_trains_lora_only_and_reports_trl_figures(base, tokenizer, cfg, recorded, tmp_path: Path) -> None:
    model = attach_adapter(base, None, cfg)
    before = snapshot(model)
    progress: list[tuple[float, str]] = []

    result = train_preference(
        model, tokenizer, "dpo", dpo_rows(), cfg, BETA, progress=lambda f, m: progress.append((f, m))
    )

    assert isinstance(result, PreferenceMetrics)
    assert result.method == "dpo" and result.rows == len(PAIRS) and result.reference == "adapter"
    assert result.steps == 2 * math.ceil(len(PAIRS) / cfg.batch_size) > 0
    assert result.duration_s > 0
    assert_finite(result.loss, result.loss_after, result.reward_accuracy, result.reward_margin)
    assert_finite(result.rewards_chosen, result.rewards_rejected, result.kl)
    assert 0.0 <= result.reward_accuracy <= 1.0
    # the stage learnt the preference: chosen answers gained on rejected ones, and the loss fell below log 2
    assert result.reward_margin > 0
    assert result.loss_after < math.log(2)
    assert result.loss_before is None and result.metrics_before == {}  # eval_before is off by default
    assert result.figures_from == "evaluation"
    # the figures are TRL's own eval metrics, under TRL's names
    m = result.trl_metrics
    assert result.reward_accuracy == m["eval_rewards/accuracies"]
    assert result.reward_margin == m["eval_rewards/margins"]
    assert result.rewards_chosen == m["eval_rewards/chosen"] and result.rewards_rejected == m["eval_rewards/rejected"]
    assert result.loss_after == m["eval_loss"]
    assert {"eval_logps/chosen", "eval_logps/rejected"} <= m.keys()
    assert all(math.isfinite(v) for v in m.values())
    # TRL's DPO logs no KL: kl is the mean log-ratio to the reference, i.e. rewards / beta
    assert not any("kl" in key.lower() for key in m)
    assert result.kl == pytest.approx((m["eval_rewards/chosen"] + m["eval_rewards/rejected"]) / (2 * BETA))
    # TRL's training logs, averaged
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= result.train_metrics.keys()

    assert progress and progress[-1][0] == pytest.approx(1.0) and progress[-1][1].startswith("DPO")
    assert_lora_moved_base_kept(model, before)
    assert [(r["trainer"], r["ref_model"]) for r in recorded] == [("DPOTrainer", None)]

    # what the caller then saves is the one trained adapter, with no "ref" copy beside it
    model.save_pretrained(str(tmp_path / "adapter"))
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_dpo_without_eval_after_reports_training_logs(base, tokenizer, cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    import trl

    evaluations: list[str] = []
    monkeypatch.setattr(trl.DPOTrainer, "evaluate", lambda self, *a, **k: evaluations.append("evaluate") or {})
    model = attach_adapter(base, None, cfg)
    result = train_preference(model, tokenizer, "dpo", dpo_rows(), cfg, BETA, eval_after=False)
    assert evaluations == []  # no evaluation pass inside TRL
    assert result.figures_from == "training steps"
    assert result.loss_after is None and result.trl_metrics == {}
    assert_finite(result.loss)
    assert result.train_metrics["loss"] == pytest.approx(result.loss)
    # the reward figures are the means of TRL's training-step logs, under the manifest's names
    logs = result.train_metrics
    assert result.reward_accuracy == logs["rewards/accuracies"] and result.reward_margin == logs["rewards/margins"]
    assert result.rewards_chosen == logs["rewards/chosen"] and result.rewards_rejected == logs["rewards/rejected"]
    assert result.kl == pytest.approx((logs["rewards/chosen"] + logs["rewards/rejected"]) / (2 * BETA))


# ----- KTO -----
@pytest.mark.parametrize(
    "labels", [[False, False, False, False], [True, False, True, False]], ids=["rejections", "mixed"]
)
def test_kto_trains_lora_only(base, tokenizer, cfg, recorded, labels: list[bool]) -> None:
    model = attach_adapter(base, None, cfg)
    before = snapshot(model)

    result = train_preference(model, tokenizer, "kto", kto_rows(labels), cfg, BETA)

    assert result.method == "kto" and result.rows == len(labels) and result.steps > 0
    assert_finite(result.loss, result.loss_after, result.kl, result.rewards_rejected)
    assert result.kl == result.trl_metrics["eval_kl"] >= 0.0  # TRL's own KL estimate, clamped at 0
    assert result.reward_accuracy is None  # TRL's KTO reports no accuracy
    # the undesirable answers lost probability against the reference
    assert result.rewards_rejected < 0
    if all(not label for label in labels):
        assert result.rewards_chosen is None and result.reward_margin is None
        assert "eval_rewards/chosen" not in result.trl_metrics
    else:
        # the desirable answers gained on the undesirable ones (TRL logs rewards/margins only for
        # batches holding both kinds, so it may be absent after the seeded shuffle)
        assert_finite(result.rewards_chosen)
        assert result.rewards_chosen > result.rewards_rejected
        assert result.reward_margin == result.trl_metrics.get("eval_rewards/margins")
    assert_lora_moved_base_kept(model, before)
    assert [(r["trainer"], r["ref_model"], r["batch_size"]) for r in recorded] == [("KTOTrainer", None, 2)]


def test_kto_with_three_rows_uses_one_batch(base, tokenizer, cfg, recorded) -> None:
    """Three rows at batch size 2 would leave one row alone with itself as its KL pair."""
    model = attach_adapter(base, None, cfg)
    result = train_preference(model, tokenizer, "kto", kto_rows([False, False, True]), cfg, BETA)
    assert result.batch_size == 3 == recorded[0]["batch_size"]
    assert result.steps == 2  # one batch, two epochs


def test_kto_refuses_a_single_row(base, tokenizer, cfg) -> None:
    model = attach_adapter(base, None, cfg)
    with pytest.raises(ValueError, match="KTO needs at least 2 labelled rows"):
        train_preference(model, tokenizer, "kto", kto_rows([False]), cfg, BETA)
    assert list(model.peft_config) == ["default"]


# ----- the reference -----
def completion_logps(model, tokenizer, rows: list[dict], key: str) -> list[float]:
    """Sum of log-probabilities of each row's completion under ``model`` (a check, not a loss)."""

    def ids(messages, **kwargs) -> list[int]:
        out = tokenizer.apply_chat_template(messages, **kwargs)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    model.eval()
    result = []
    with torch.no_grad():
        for row in rows:
            prompt_ids = ids(row["prompt"], add_generation_prompt=True)
            full_ids = ids(row["prompt"] + row[key])
            assert full_ids[: len(prompt_ids)] == prompt_ids
            logits = model(input_ids=torch.tensor([full_ids])).logits[0]
            logps = torch.log_softmax(logits[:-1].float(), dim=-1)
            targets = torch.tensor(full_ids[1:])
            token_logps = logps.gather(1, targets[:, None])[:, 0]
            result.append(float(token_logps[len(prompt_ids) - 1 :].sum()))
    return result


@pytest.mark.parametrize("reference", ["adapter", "base"])
def test_reference_is_a_frozen_adapter_copy_or_the_base(base, tokenizer, cfg, recorded, tmp_path, reference) -> None:
    """No second model: TRL's reference is the adapter as the stage began, or the adapters disabled."""
    model = attach_adapter(base, None, cfg)
    # a round's SFT first, so the adapter is no longer the identity and the two references differ
    sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in dpo_rows()]
    train_sft(model, tokenizer, sft_rows, cfg, tmp_path / "sft")
    rows = dpo_rows()
    policy = completion_logps(model, tokenizer, rows, "chosen")
    with model.disable_adapter():
        base_logps = completion_logps(model, tokenizer, rows, "chosen")
    assert sum(policy) / len(policy) - sum(base_logps) / len(base_logps) > 0.1  # SFT moved the chosen answers up

    result = train_preference(model, tokenizer, "dpo", rows, cfg, BETA, eval_before=True, reference=reference)

    before = result.metrics_before
    assert before["eval_logps/chosen"] == pytest.approx(sum(policy) / len(policy), rel=1e-4)
    if reference == "adapter":
        # the reference is the policy itself at that point: rewards 0, loss log 2
        assert before["eval_rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
        assert before["eval_rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
        assert result.loss_before == pytest.approx(math.log(2), abs=1e-5)
        assert recorded[0]["adapters"] == ["default", "ref"]
    else:
        # the reference is the base: the rewards before training are SFT's shift, beta * (policy - base)
        expected = BETA * (sum(policy) - sum(base_logps)) / len(policy)
        assert before["eval_rewards/chosen"] == pytest.approx(expected, rel=1e-3)
        assert recorded[0]["adapters"] == ["default"]
    assert recorded[0]["ref_model"] is None
    assert list(model.peft_config) == ["default"]
    assert result.reference == reference
    # On CPU neither stage recomputes activations (TrainConfig.activation_checkpointing)
    assert recorded[0]["checkpointing"] is False


def test_fresh_adapter_starts_at_the_reference(base, tokenizer, cfg) -> None:
    """With a fresh adapter (B = 0), TRL's rewards before training are zero: the policy is the reference."""
    model = attach_adapter(base, None, cfg)
    result = train_preference(model, tokenizer, "dpo", dpo_rows(), cfg, BETA, eval_before=True, reference="base")
    assert result.metrics_before["eval_rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert result.metrics_before["eval_rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert result.loss_before == pytest.approx(math.log(2), abs=1e-5)
    assert result.loss_after < result.loss_before


# ----- bad input -----
def test_bad_input_is_refused_clearly(base, tokenizer, cfg) -> None:
    model = attach_adapter(base, None, cfg)
    before = snapshot(model)
    with pytest.raises(ValueError, match="no DPO rows to train on"):
        train_preference(model, tokenizer, "dpo", [], cfg, BETA)
    with pytest.raises(ValueError, match="no KTO rows to train on"):
        train_preference(model, tokenizer, "kto", [], cfg, BETA)
    with pytest.raises(ValueError, match="unknown preference method 'sft'"):
        train_preference(model, tokenizer, "sft", dpo_rows(), cfg, BETA)
    with pytest.raises(ValueError, match="DPO row 0 lacks chosen, rejected"):
        train_preference(model, tokenizer, "dpo", kto_rows([True, False]), cfg, BETA)
    with pytest.raises(ValueError, match="unknown reference"):
        train_preference(model, tokenizer, "dpo", dpo_rows(), cfg, BETA, reference="sft")
    with pytest.raises(ValueError, match="beta must be positive"):
        train_preference(model, tokenizer, "dpo", dpo_rows(), cfg, 0.0)
    with pytest.raises(ValueError, match="PeftModel"):
        train_preference(base, tokenizer, "dpo", dpo_rows(), cfg, BETA)
    after = snapshot(model)
    assert after.keys() == before.keys() and all(torch.equal(before[n], after[n]) for n in before)


def test_non_finite_loss_raises_and_leaves_no_ref_adapter(base, tokenizer, cfg) -> None:
    model = attach_adapter(base, None, cfg)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="DPO produced a non-finite loss"):
        train_preference(model, tokenizer, "dpo", dpo_rows(), cfg, BETA)
    assert list(model.peft_config) == ["default"]
