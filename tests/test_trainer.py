"""One training round: train_sft on a LoRA adapter (TRL), and RoundRunner from the store to a version.

The trainer shape follows peft/TRL's own tests: snapshot the parameters, train, check a loss was
logged, check the LoRA weights moved and the base weights did not.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.core.config import LORA_TARGETS
from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling
from hitl_app.feedback.store import FeedbackStore
from hitl_app.training.sft import TrainConfig, attach_adapter, epoch_schedule, train_sft

SYSTEM = "You are a careful medical assistant helping clinicians."
QA = [
    ("What is the first-line treatment for hypertension in adults?", "A thiazide diuretic or an ACE inhibitor."),
    ("How much paracetamol may an adult take?", "Paracetamol 500 mg every 6 hours, at most 4 g a day."),
    ("What should a patient with sudden chest pain do?", "Sudden chest pain needs urgent assessment: call emergency services."),
    ("How is asthma treated?", "Asthma is treated with inhaled corticosteroids and a reliever inhaler."),
    ("What are the signs of a stroke?", "Stroke signs: face drooping, arm weakness, speech difficulty."),
    ("Is chest pain an emergency?", "Yes: call emergency services."),
]
GREEDY = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8)


def sft_rows(pairs=QA, system: str | None = SYSTEM) -> list[dict]:
    """Conversational prompt-completion rows, as examples.sft_row writes them."""
    rows = []
    for question, answer in pairs:
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]})
    return rows


def config(**overrides) -> TrainConfig:
    values = dict(
        lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3, num_epochs=3, batch_size=2, max_seq_length=256,
        sft_loss_floor=0.0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def lora_state(model) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a PeftModel, keyed without the adapter name."""
    return {
        name.replace(".default", ""): p.detach().clone() for name, p in model.named_parameters() if "lora_" in name
    }


@pytest.fixture
def base(tiny_base: Path):
    torch.manual_seed(0)
    return load_base(tiny_base, LoadOptions(device="cpu"))


@pytest.fixture
def tokenizer(tiny_base: Path):
    return load_tokenizer(tiny_base)


# ----- train_sft -----
def test_train_sft_moves_lora_only(base, tokenizer, tmp_path: Path) -> None:
    cfg = config(batch_size=3)
    model = attach_adapter(base, None, cfg)
    before = snapshot(model)
    lora_names = [n for n in before if "lora_" in n]
    # a LoRA layer on each of the 7 projections of both layers, A and B
    assert len(lora_names) == 2 * len(LORA_TARGETS) * 2
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_names)
    progress: list[tuple[float, str]] = []

    out = tmp_path / "adapter"
    result = train_sft(model, tokenizer, sft_rows(), cfg, out, progress=lambda f, m: progress.append((f, m)))

    assert math.isfinite(result.loss_before) and math.isfinite(result.loss_after)
    assert result.loss_after < result.loss_before - 0.01  # a real drop, not noise
    assert result.steps == 3 * math.ceil(len(QA) / cfg.batch_size)
    assert result.duration_s > 0
    assert progress and progress[-1][0] == pytest.approx(1.0)
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)

    after = dict(model.named_parameters())
    changed_lora = [n for n in lora_names if not torch.equal(before[n], after[n])]
    # every B (zero at the start) must have moved, and A too
    assert set(changed_lora) == set(lora_names)
    for name, tensor in before.items():
        if name not in lora_names:
            assert torch.equal(tensor, after[name]), f"base weight {name} changed"

    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "adapter_config.json").is_file()


def test_epoch_schedule_repeats_new_rows_and_replays_old_ones_once() -> None:
    new = [{"id": i} for i in range(4)]
    replay = [{"id": f"old{i}"} for i in range(3)]
    schedule = epoch_schedule(new, replay, 3, seed=0)
    assert len(schedule) == 3 * 4 + 3
    assert sorted(str(r["id"]) for r in schedule) == sorted([str(i) for i in range(4)] * 3 + ["old0", "old1", "old2"])
    assert schedule == epoch_schedule(new, replay, 3, seed=0)  # seeded
    assert schedule != epoch_schedule(new, replay, 3, seed=1)  # shuffled
    half = epoch_schedule(new, [], 1.5, seed=0)  # a fractional epoch adds that share of the rows once more
    assert len(half) == 6 and {r["id"] for r in half} == set(range(4))
    with pytest.raises(ValueError, match="epochs must be positive"):
        epoch_schedule(new, replay, 0, seed=0)


def test_sft_stops_at_the_loss_floor(base, tokenizer) -> None:
    # Any loss is below a floor of 100 nats: SFT stops after one pass over the distinct rows.
    cfg = config(batch_size=2, sft_loss_floor=100.0)
    result = train_sft(attach_adapter(base, None, cfg), tokenizer, sft_rows(), cfg)
    assert result.steps == math.ceil(len(QA) / cfg.batch_size)


def test_train_sft_refuses_no_rows(base, tokenizer, tmp_path: Path) -> None:
    cfg = config()
    with pytest.raises(ValueError, match="no SFT rows"):
        train_sft(attach_adapter(base, None, cfg), tokenizer, [], cfg, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_attach_adapter_continues_from_the_parent(base, tokenizer, tiny_base: Path, tmp_path: Path) -> None:
    cfg = config(num_epochs=1)
    parent = attach_adapter(base, None, cfg)
    train_sft(parent, tokenizer, sft_rows(), cfg, tmp_path / "parent")
    parent_weights = lora_state(parent)
    assert any(t.abs().sum() > 0 for n, t in parent_weights.items() if "lora_B" in n)  # not the identity

    # the saved adapter is the trained one, with the round's LoRA settings
    child = attach_adapter(load_base(tiny_base, LoadOptions()), tmp_path / "parent", cfg)
    assert child.peft_config["default"].r == cfg.lora_r
    assert child.peft_config["default"].lora_alpha == cfg.lora_alpha
    assert sorted(child.peft_config["default"].target_modules) == sorted(LORA_TARGETS)
    child_weights = lora_state(child)
    assert child_weights.keys() == parent_weights.keys()
    for name, tensor in parent_weights.items():
        assert torch.equal(child_weights[name], tensor), name
    # loaded trainable, so a round can go on training it
    assert all(p.requires_grad for n, p in child.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in child.named_parameters() if "lora_" not in n)

    train_sft(child, tokenizer, sft_rows(), cfg, tmp_path / "child")
    assert any(not torch.equal(t, parent_weights[n]) for n, t in lora_state(child).items())


def test_fresh_adapter_is_the_identity(base, tokenizer) -> None:
    """A fresh adapter (B = 0) starts exactly at the base model."""
    messages = sft_rows()[0]["prompt"]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        expected = base(**inputs).logits
    model = attach_adapter(base, None, config())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected)


def test_loss_is_on_the_completion_only(base, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL's prepared rows mask every prompt token (label -100) and keep every completion token, and
    the prompt is the one the app serves with (``ModelManager.encode``)."""
    from hitl_app.serving.manager import ModelManager

    import trl

    prepared: list = []

    class Recording(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            prepared.append(self.train_dataset)

    monkeypatch.setattr(trl, "SFTTrainer", Recording)
    rows = sft_rows(QA[:2]) + sft_rows(QA[2:4], system=None)
    cfg = config(num_epochs=1)
    train_sft(attach_adapter(base, None, cfg), tokenizer, rows, cfg, tmp_path / "adapter")

    assert len(prepared) == 1 and len(prepared[0]) == len(rows)
    examples = {tuple(example["input_ids"]): example for example in prepared[0]}  # the schedule shuffles rows
    for row in rows:
        prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)
        full_ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"])
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
            prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
        example = examples[tuple(full_ids)]
        system = row["prompt"][0]["content"] if row["prompt"][0]["role"] == "system" else None
        served = ModelManager.encode(_Serving(tokenizer, system), row["prompt"][-1]["content"])["input_ids"][0].tolist()
        assert served == list(prompt_ids)
        assert full_ids[: len(prompt_ids)] == prompt_ids
        labels = example["labels"]
        assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
        assert labels[len(prompt_ids) :] == full_ids[len(prompt_ids) :]


class _Serving:
    """Just enough of a ModelManager for its ``encode`` and ``messages``."""

    def __init__(self, tokenizer, system_prompt: str | None) -> None:
        from hitl_app.serving.manager import ModelManager

        self.tokenizer, self.system_prompt, self.context_length = tokenizer, system_prompt, 512
        self.sampling = GREEDY
        self.messages = lambda prompt: ModelManager.messages(self, prompt)


# ----- RoundRunner: store -> version -----
class Judge:
    """Writes generations and judgements into the feedback store, as the service does."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.n = 0

    def ask(self, question: str, answer: str, version: str = BASE_VERSION) -> Generation:
        gen = Generation(
            reviewer="dr-a",
            prompt=question,
            system_prompt=SYSTEM,
            candidates=[answer],
            version=version,
            sampling=GREEDY,
            prompt_tokens=10,
        )
        self.store.append(gen)
        return gen

    def judge(self, action: str, question: str, answer: str, **fields) -> Feedback:
        gen = self.ask(question, answer)
        fb = Feedback(reviewer="dr-a", generation_id=gen.id, action=action, **fields)
        self.store.append(fb)
        return fb


@pytest.fixture
def settings(make_settings):
    return make_settings(num_epochs=2, replay_size=2, train_batch_size=4, candidates=1)


def test_round_runner_publishes_a_complete_version(settings, tiny_base: Path) -> None:
    from hitl_app.training.round import RoundRunner
    from hitl_app.training.status import StatusFile

    store = FeedbackStore(settings.feedback_dir)
    judge = Judge(store)
    accepted = judge.judge("accept", *QA[0])
    edited = judge.judge("edit", QA[1][0], "Paracetamol 1 g", text=QA[1][1])
    rejected = judge.judge("reject", QA[2][0], "Rest at home.", reason="chest pain is an emergency")

    runner = RoundRunner(settings, str(tiny_base))
    assert runner.run("test") == "v0001"

    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == ["v0001"]
    assert registry.active().version == "v0001"
    assert registry.active().activated_by == "trainer"
    assert [p.name for p in settings.checkpoints_dir.glob(".staging-*")] == []
    m = registry.manifest("v0001")
    assert m.version == "v0001"
    assert m.parent == BASE_VERSION
    assert m.base_model == str(tiny_base)
    # trained on the accepted answer and the edit (SFT); the rejection is at most a non-SFT row
    assert m.record_ids[:2] == [accepted.id, edited.id]
    assert set(m.record_ids) <= {accepted.id, edited.id, rejected.id}
    assert m.new_record_ids == [accepted.id, edited.id, rejected.id]
    assert m.store_cursor == store.path.stat().st_size
    assert m.config["lora_r"] == settings.lora_r
    assert m.config["learning_rate"] == settings.learning_rate
    assert m.config["requested_by"] == "test"
    assert m.config["replay_size"] == settings.replay_size
    assert math.isfinite(m.metrics.train_loss_before) and math.isfinite(m.metrics.train_loss_after)
    assert m.metrics.duration_s > 0
    assert {k: m.metrics.rows.get(k) for k in ("new_accept", "new_edit", "new_reject", "sft")} == {
        "new_accept": 1,
        "new_edit": 1,
        "new_reject": 1,
        "sft": 2,
    }
    assert m.metrics.sft_steps == 1  # 2 rows twice over (2 epochs), in one batch of 4
    assert registry.consumed_cursor() == m.store_cursor
    assert 0 < StatusFile(settings.checkpoints_dir).read().progress < 1

    # the edit, not the rejected or the original answer, is what was trained on
    from hitl_app.feedback.training_rows import build_rows
    from hitl_app.feedback.ledger import FeedbackLedger

    ledger = FeedbackLedger(store)
    ledger.refresh()
    rows = build_rows(ledger.judgements(), [], 0, 0)
    assert [r["completion"][0]["content"] for r in rows.sft] == [QA[0][1], QA[1][1]]


def test_round_runner_continues_from_the_active_version(
    settings, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel

    import hitl_app.training.round as training_round
    from hitl_app.training.round import RoundRunner

    attached: list[tuple[Path | None, dict]] = []

    def recording_attach(base_model, parent_adapter, cfg):
        model = attach_adapter(base_model, parent_adapter, cfg)
        attached.append((parent_adapter, lora_state(model)))
        return model

    monkeypatch.setattr(training_round, "attach_adapter", recording_attach)
    store = FeedbackStore(settings.feedback_dir)
    judge = Judge(store)
    first = [judge.judge("accept", *qa) for qa in QA[:3]]
    runner = RoundRunner(settings, str(tiny_base))
    assert runner.run("round-1") == "v0001"
    registry = Registry(settings.checkpoints_dir)
    cursor_1 = registry.manifest("v0001").store_cursor

    # nothing new: no round, nothing published, ACTIVE unchanged
    assert runner.run("round-2") is None
    assert registry.versions() == ["v0001"]
    assert registry.active().version == "v0001"

    new = [judge.judge("accept", *qa) for qa in QA[4:]]
    assert runner.run("round-2") == "v0002"  # the same runner: base reused after unloading the adapter
    m2 = registry.manifest("v0002")
    assert m2.parent == "v0001"
    assert registry.active().version == "v0002"
    assert m2.store_cursor == store.path.stat().st_size > cursor_1
    assert m2.new_record_ids[-len(new) :] == [fb.id for fb in new]
    replayed = [i for i in m2.record_ids if i not in m2.new_record_ids]
    assert len(replayed) == settings.replay_size  # bounded replay of the first round's rows
    assert set(replayed) <= {fb.id for fb in first}
    assert m2.record_ids[: len(new)] == [fb.id for fb in new]
    assert m2.metrics.rows["sft"] == len(new) + settings.replay_size
    assert m2.metrics.rows["replay_accept"] == settings.replay_size

    # round 1 started from a fresh adapter (identity), round 2 from v0001's weights exactly
    assert [parent for parent, _ in attached] == [None, registry.adapter_dir("v0001")]
    assert all(not t.any() for k, t in attached[0][1].items() if "lora_B" in k)
    v1 = lora_state(PeftModel.from_pretrained(load_base(tiny_base, LoadOptions()), str(registry.adapter_dir("v0001"))))
    v2 = lora_state(PeftModel.from_pretrained(load_base(tiny_base, LoadOptions()), str(registry.adapter_dir("v0002"))))
    start_2 = attached[1][1]
    assert start_2.keys() == v1.keys() == v2.keys()
    assert all(torch.equal(start_2[k], v1[k]) for k in v1)
    assert any(not torch.equal(v1[k], v2[k]) for k in v1)


def test_round_runner_with_nothing_to_train(settings, tiny_base: Path) -> None:
    from hitl_app.training.round import RoundRunner
    from hitl_app.training.status import StatusFile

    runner = RoundRunner(settings, str(tiny_base))
    assert runner.run("empty") is None
    assert Registry(settings.checkpoints_dir).versions() == []
    status = StatusFile(settings.checkpoints_dir).read()
    assert status.state == "idle" and "nothing to train" in status.message
    assert runner._base is None  # the model is not even loaded
