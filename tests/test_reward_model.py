"""The reward model: trained with TRL's RewardTrainer on a designed preference (urgent care on
red-flag questions), scored as TRL formats its rows, continued from a saved adapter, and unloaded
back to the untrained base."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from hitl_app.bench.reward_pairs import URGENT, WAIT, designed_pairs
from hitl_app.evaluation.reward_model import (
    chat_ids,
    load_reward_base,
    pairwise_accuracy,
    score_completions,
    score_pairs,
    shared_prefix,
)
from hitl_app.training.reward import attach_reward_adapter, train_reward
from hitl_app.training.sft import TrainConfig

# The tiny model's recipe: a small LoRA and a high rate, a few epochs over 80 pairs (50 steps).
TRAIN_PAIRS, EPOCHS, LEARNING_RATE = 80, 5.0, 5e-3
CFG = TrainConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, batch_size=8, max_seq_length=256)
CANDIDATES = [
    "Call 999 now.",
    "Rest at home and see how it goes over the next few days.",
    "This may be a heart attack. Go to the emergency department straight away.",
    "Take paracetamol.",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_base))


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return designed_pairs(40, seed=0, split="heldout")


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tokenizer):
    """A reward model trained on the designed train split, and the stage's result."""
    model = attach_reward_adapter(load_reward_base(tiny_base), None, CFG)
    result = train_reward(
        model, tokenizer, designed_pairs(TRAIN_PAIRS, seed=0), CFG, epochs=EPOCHS, learning_rate=LEARNING_RATE
    )
    model.eval()
    return model, result


def _flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [score for pair in pairs for score in pair]


def _quick_model(tiny_base: Path, tokenizer, previous: Path | None = None):
    """A reward model after a couple of steps: enough to move its scores away from the base's."""
    model = attach_reward_adapter(load_reward_base(tiny_base), previous, CFG)
    train_reward(model, tokenizer, designed_pairs(16, seed=1), CFG, epochs=1, learning_rate=LEARNING_RATE)
    return model


def test_the_reward_model_learns_the_designed_preference_and_generalises(
    tiny_base: Path, tokenizer, trained, heldout
) -> None:
    untrained = pairwise_accuracy(load_reward_base(tiny_base), tokenizer, heldout)
    model, result = trained
    after = pairwise_accuracy(model, tokenizer, heldout)

    assert after.n == untrained.n == len(heldout)
    assert after.accuracy >= 0.9, after
    assert untrained.accuracy <= 0.75, untrained  # the test can fail: an untrained head does not know
    assert after.mean_margin > untrained.mean_margin
    assert result.pairs == TRAIN_PAIRS and result.dropped_too_long == 0
    assert result.steps == math.ceil(TRAIN_PAIRS / CFG.batch_size) * EPOCHS
    assert result.loss_last < result.loss_first and math.isfinite(result.loss_first)
    assert result.train_accuracy is not None and 0.0 <= result.train_accuracy <= 1.0
    assert result.duration_s > 0


def test_scores_are_of_the_chat_text_trl_trains_on_and_batching_changes_nothing(trained, tokenizer) -> None:
    import tempfile

    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model, _ = trained
    pairs = designed_pairs(3, seed=5, split="heldout")
    # The token ids TRL's RewardTrainer trains on for these rows, from its own preprocessing.
    with tempfile.TemporaryDirectory() as scratch:
        args = RewardConfig(output_dir=scratch, use_cpu=True, report_to=[], bf16=False, max_length=None)
        rows = RewardTrainer._prepare_dataset(None, Dataset.from_list(pairs), tokenizer, args, "test")
    expected = []
    with torch.no_grad():
        for row in rows:
            for key in ("chosen_ids", "rejected_ids"):
                expected.append(float(model(input_ids=torch.tensor([row[key]])).logits[0, 0]))
    got = _flat(score_pairs(model, tokenizer, pairs, batch_size=4))
    assert got == pytest.approx(expected, abs=1e-5)
    assert [r["chosen_ids"] for r in rows] == [chat_ids(tokenizer, p["prompt"] + p["chosen"]) for p in pairs]

    prompt = pairs[0]["prompt"]
    batched = score_completions(model, tokenizer, prompt, CANDIDATES, batch_size=3)
    alone = [score_completions(model, tokenizer, prompt, [c], batch_size=1)[0] for c in CANDIDATES]
    assert len(batched) == len(CANDIDATES) and len(set(batched)) == len(CANDIDATES)
    assert batched == pytest.approx(alone, abs=1e-5)
    assert score_completions(model, tokenizer, prompt, []) == []
    # The prompt is part of the scored text.
    other = score_completions(model, tokenizer, [{"role": "user", "content": "Hello."}], CANDIDATES[:1])
    assert other[0] != pytest.approx(batched[0], abs=1e-6)


def test_candidates_run_their_shared_prompt_once_and_score_as_alone(trained, tokenizer) -> None:
    model, _ = trained
    prompt = designed_pairs(1, seed=5, split="heldout")[0]["prompt"]
    rows = [chat_ids(tokenizer, [*prompt, {"role": "assistant", "content": c}]) for c in CANDIDATES]
    shared = shared_prefix(rows)
    assert shared >= len(chat_ids(tokenizer, prompt))  # the whole prompt, and the answer's header
    shapes: list[tuple[int, ...]] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    try:
        batched = score_completions(model, tokenizer, prompt, CANDIDATES)
    finally:
        hook.remove()
    # One pass over the shared prefix, then one over the four answers' own tokens.
    assert shapes == [(1, shared), (len(CANDIDATES), max(len(r) for r in rows) - shared)]
    alone = [score_completions(model, tokenizer, prompt, [c])[0] for c in CANDIDATES]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_a_single_pass_reports_its_first_and_last_quarter(tiny_base: Path, tokenizer) -> None:
    model = attach_reward_adapter(load_reward_base(tiny_base), None, CFG)
    result = train_reward(model, tokenizer, designed_pairs(64, seed=3), CFG, epochs=1, learning_rate=LEARNING_RATE)
    assert result.steps == 8
    # Two steps each (a quarter of one pass), not the same eight steps twice.
    assert result.loss_first != result.loss_last
    assert math.isfinite(result.loss_first) and math.isfinite(result.loss_last)


def test_shared_prefix_leaves_every_row_a_token_of_its_own() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix([[1, 2], [1, 2, 3]]) == 1
    assert shared_prefix([[7, 8], [9, 8]]) == 0
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2


def test_pairwise_accuracy_takes_strings_and_counts_ties_as_wrong(trained, tokenizer, heldout) -> None:
    model, _ = trained
    as_strings = [
        {"prompt": p["prompt"], "chosen": p["chosen"][0]["content"], "rejected": p["rejected"][0]["content"]}
        for p in heldout[:6]
    ]
    assert pairwise_accuracy(model, tokenizer, as_strings) == pairwise_accuracy(model, tokenizer, heldout[:6])
    tie = [{"prompt": heldout[0]["prompt"], "chosen": "Call 999 now.", "rejected": "Call 999 now."}]
    result = pairwise_accuracy(model, tokenizer, tie)
    assert result.accuracy == 0.0 and result.mean_margin == 0.0 and result.n == 1
    with pytest.raises(ValueError, match="no preference pairs"):
        pairwise_accuracy(model, tokenizer, [])
    with pytest.raises(ValueError, match="pair 0: 'rejected'"):
        pairwise_accuracy(model, tokenizer, [{"prompt": [], "chosen": "a"}])


def test_a_continued_adapter_starts_from_the_saved_scores_and_head(tiny_base: Path, tokenizer, tmp_path: Path) -> None:
    from safetensors import safe_open

    model = _quick_model(tiny_base, tokenizer)
    pairs = designed_pairs(4, seed=2, split="heldout")
    saved = _flat(score_pairs(model, tokenizer, pairs))
    model.save_pretrained(str(tmp_path / "reward"))
    with safe_open(str(tmp_path / "reward" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(".score." in k or k.endswith("score.weight") for k in keys), keys  # the head, via modules_to_save
    assert any("lora_A" in k for k in keys)

    base = model.unload()
    continued = attach_reward_adapter(base, tmp_path / "reward", CFG)
    assert _flat(score_pairs(continued, tokenizer, pairs)) == pytest.approx(saved, abs=1e-5)
    trainable = [n for n, p in continued.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    train_reward(continued, tokenizer, designed_pairs(8, seed=3), CFG, epochs=1, learning_rate=LEARNING_RATE)
    assert _flat(score_pairs(continued, tokenizer, pairs)) != pytest.approx(saved, abs=1e-5)


def test_unload_gives_back_the_untrained_base(tiny_base: Path, tokenizer) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    prompt = designed_pairs(1, seed=4)[0]["prompt"]
    fresh = score_completions(load_reward_base(tiny_base), tokenizer, prompt, CANDIDATES)
    model = _quick_model(tiny_base, tokenizer)
    assert score_completions(model, tokenizer, prompt, CANDIDATES) != pytest.approx(fresh, abs=1e-4)

    base = model.unload()
    assert type(base).__name__.endswith("ForSequenceClassification")
    assert not any(isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper)) for m in base.modules())
    assert isinstance(base.score, torch.nn.Linear)
    # The same scores as a fresh load: the original head is back, not the trained copy.
    assert score_completions(base, tokenizer, prompt, CANDIDATES) == pytest.approx(fresh, abs=1e-5)
    # And the next round's fresh adapter starts from that head.
    again = attach_reward_adapter(base, None, CFG)
    assert score_completions(again, tokenizer, prompt, CANDIDATES) == pytest.approx(fresh, abs=1e-5)


def test_two_loads_are_the_same_untrained_model_and_load_quietly(
    tiny_base: Path, tokenizer, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = designed_pairs(1, seed=6)[0]["prompt"]
    with caplog.at_level(logging.INFO, logger="hitl_app.evaluation.reward_model"):
        first, second = load_reward_base(tiny_base), load_reward_base(tiny_base)
    assert torch.equal(first.score.weight, second.score.weight) and first.score.weight.abs().sum() > 0
    assert score_completions(first, tokenizer, prompt, CANDIDATES) == score_completions(second, tokenizer, prompt, CANDIDATES)
    assert first.config.pad_token_id == tokenizer.pad_token_id and first.config.num_labels == 1
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert sum("new score head" in r.getMessage() for r in caplog.records) == 2


def test_bad_input_is_refused_with_a_clear_message(tiny_base: Path, tokenizer) -> None:
    model = attach_reward_adapter(load_reward_base(tiny_base), None, CFG)
    with pytest.raises(ValueError, match="no preference pairs to train the reward model on"):
        train_reward(model, tokenizer, [], CFG, epochs=1, learning_rate=1e-3)
    with pytest.raises(ValueError, match="pair 0: 'prompt' must be a list"):
        train_reward(model, tokenizer, [{"prompt": "q", "chosen": "a", "rejected": "b"}], CFG, epochs=1, learning_rate=1e-3)
    with pytest.raises(ValueError, match="epochs and learning_rate > 0"):
        train_reward(model, tokenizer, designed_pairs(2), CFG, epochs=0, learning_rate=1e-3)
    with pytest.raises(ValueError, match="one-label sequence classifier"):
        attach_reward_adapter(model.unload().model, None, CFG)  # the backbone alone has no head


def test_designed_pairs_are_seeded_and_the_splits_share_no_sentence() -> None:
    train, heldout = designed_pairs(60, seed=0), designed_pairs(60, seed=0, split="heldout")
    assert train == designed_pairs(60, seed=0) and train != designed_pairs(60, seed=1)
    assert len({(p["prompt"][-1]["content"], p["chosen"][0]["content"]) for p in train}) == 60

    def sentences(pairs: list[dict], key: str) -> set[str]:
        return {s.strip() + "." for p in pairs for s in p[key][0]["content"].split(".") if s.strip()}

    questions = {p["prompt"][-1]["content"] for p in train}
    assert questions.isdisjoint(p["prompt"][-1]["content"] for p in heldout)
    for key in ("chosen", "rejected"):
        assert sentences(train, key).isdisjoint(sentences(heldout, key))
    for pair in train + heldout:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert any(action in chosen for action in URGENT) and not any(action in rejected for action in URGENT)
        assert any(action in rejected for action in WAIT)
    with pytest.raises(ValueError, match="unknown split"):
        designed_pairs(1, split="test")  # type: ignore[arg-type]
