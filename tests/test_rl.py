"""The RL stage: train_rl on TRL's GRPOTrainer (tiny model), and its reward functions.

The trainer checks follow tests/test_trainer.py: snapshot the parameters, train, check the LoRA
weights moved and the base weights did not, and check TRL's figures are there and finite.

The tiny base is random, with embeddings (tied to its output layer) of standard deviation 0.02:
its logits stay below about 0.7 whatever the hidden state, so its next-token distribution is near
uniform over 400 tokens and no adapter can move it far. The learning tests scale the weight of its
final norm by ``NORM_SCALE`` (a frozen base weight), which gives the logits the range of a trained
model's (up to about 6) without favouring any token; a LoRA then has something to learn.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hitl_app.safety.checker import MEDICATION_KINDS, SafetyChecker
from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.training.rl import (
    URGENCY_FLAG,
    RLResult,
    pearson,
    prompts_per_step,
    reward_model_reward,
    safety_reward,
    train_rl,
)
from hitl_app.training.sft import TrainConfig, attach_adapter

SYSTEM = "You are a careful medical assistant helping clinicians."
QUESTIONS = [
    "How is asthma treated?",
    "Is chest pain an emergency?",
    "What are the signs of a stroke?",
    "How much paracetamol may an adult take?",
]
NORM_SCALE = 10.0
# The commonest letter of the tiny tokenizer's corpus: some answers have it, some do not.
TARGET = "e"


def prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


PROMPTS = [prompt(q) for q in QUESTIONS]


def answer(text: str) -> list[dict]:
    """A completion as TRL passes a conversational one to reward functions."""
    return [{"role": "assistant", "content": text}]


def count_target(prompts, completions, **kwargs) -> list[float]:
    """0.25 for each TARGET in the answer's text, up to 1.

    Graded rather than 0/1 so that most groups of samples differ in reward (GRPO learns nothing
    from a group whose rewards are all equal). Over seeds 0-7 this run's mean reward rose from the
    first to the last 12 of 48 steps by 0.19 to 0.69.
    """
    return [min(c[-1]["content"].count(TARGET), 4) / 4 for c in completions]


def completion_tokens(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """A reward that pays for length: the answer's length in tokens."""
    return [float(len(ids)) for ids in completion_ids]


def config(**overrides) -> TrainConfig:
    values = dict(lora_r=4, lora_alpha=8, lora_dropout=0.0, batch_size=2, max_seq_length=256, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def expressive_model(tiny_base: Path, cfg: TrainConfig):
    """The tiny base with its final norm scaled (see the module docstring), with a fresh, seeded LoRA."""
    base = load_base(tiny_base, LoadOptions(device="cpu"))
    with torch.no_grad():
        base.model.norm.weight.mul_(NORM_SCALE)
    # The LoRA's A matrices are random: seed them, so the run does not depend on the tests before it.
    torch.manual_seed(cfg.seed)
    return attach_adapter(base, None, cfg)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def finite_figures(result: RLResult) -> list[float]:
    """Every number of the result (the optional ones when set)."""
    values = [result.duration_s, result.reward_first, result.reward_last, result.completion_length]
    values += [v for v in (result.kl_last, result.reward_length_correlation) if v is not None]
    return values + list(result.rewards.values())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    return load_tokenizer(tiny_base)


@pytest.fixture(scope="module")
def learned(tiny_base: Path, tokenizer):
    """One RL run on the designed reward, with the parameters before and after it."""
    cfg = config()
    model = expressive_model(tiny_base, cfg)
    before = snapshot(model)
    result = train_rl(
        model, tokenizer, PROMPTS, [count_target], cfg,
        generations=4, max_new_tokens=8, beta=0.04, learning_rate=3e-2, steps=48,
    )  # fmt: skip
    return result, before, snapshot(model), model


# ----- train_rl -----
def test_rl_raises_the_designed_reward_and_trains_only_the_lora(learned) -> None:
    result, before, after, model = learned
    assert result.steps == 48
    assert (result.prompts, result.generations, result.batch_prompts) == (4, 4, 2)
    assert result.reward_last > result.reward_first + 0.1, (result.reward_first, result.reward_last)
    assert result.rewards["count_target"] == pytest.approx(result.reward_last)  # the only reward is the total

    lora = [n for n in before if "lora_" in n]
    assert lora and all(".default." in n for n in lora)  # TRL's "ref" copy is gone again
    moved = [n for n in lora if not torch.equal(before[n], after[n])]
    assert moved, "no LoRA weight moved"
    assert any("lora_B" in n for n in moved)
    frozen = [n for n in before if "lora_" not in n]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen), "a base weight moved"
    assert list(model.peft_config) == ["default"] and model.active_adapter == "default"
    # TRL's fused log-prob head patched the backbone's forward; train_rl takes the patch off again.
    assert "forward" not in vars(model.get_base_model())


def test_kl_is_logged_and_finite_with_beta(learned) -> None:
    result, *_ = learned
    assert result.kl_last is not None and math.isfinite(result.kl_last)
    assert result.kl_last > 0  # the adapter moved away from the base it is penalised against
    assert all(math.isfinite(v) for v in finite_figures(result))


def test_kl_reference_is_the_base_unless_asked_for_the_adapter(tiny_base: Path, tokenizer) -> None:
    """With an adapter that already differs from the base, the first step's KL is the policy's
    divergence from the reference: positive against the base, zero against TRL's copy of the adapter."""
    kls = {}
    for reference in ("base", "adapter"):
        cfg = config()
        model = expressive_model(tiny_base, cfg)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5, generator=generator)
        result = train_rl(
            model, tokenizer, PROMPTS[:2], [count_target], cfg,
            generations=2, max_new_tokens=4, beta=0.1, learning_rate=1e-6, steps=1, reference=reference,
        )  # fmt: skip
        kls[reference] = result.kl_last
        assert list(model.peft_config) == ["default"]
    assert kls["base"] is not None and kls["base"] > 1e-3, kls
    assert kls["adapter"] is not None and abs(kls["adapter"]) < 1e-6, kls


def test_beta_zero_has_no_reference_and_no_kl(tiny_base: Path, tokenizer) -> None:
    cfg = config()
    model = expressive_model(tiny_base, cfg)
    reports: list[tuple[float, str]] = []
    result = train_rl(
        model, tokenizer, PROMPTS, [count_target], cfg,
        generations=2, max_new_tokens=4, beta=0.0, learning_rate=1e-2, steps=2,
        progress=lambda fraction, message: reports.append((fraction, message)),
    )  # fmt: skip
    assert result.kl_last is None and result.steps == 2
    assert list(model.peft_config) == ["default"]
    assert reports == [(0.5, "RL: step 1/2"), (1.0, "RL: step 2/2")]


def test_dropout_is_off_while_training_and_the_adapters_rates_come_back(tiny_base: Path, tokenizer) -> None:
    """Answers are sampled and scored with the LoRA's dropout off (TRL's disable_dropout); the
    adapter's rate is put back for the stages after RL."""
    cfg = config(lora_dropout=0.1)
    model = expressive_model(tiny_base, cfg)
    seen: list[set[float]] = []

    def rates_now(prompts, completions, **kwargs) -> list[float]:
        seen.append({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})
        return [0.0] * len(completions)

    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    train_rl(model, tokenizer, PROMPTS[:2], [rates_now], cfg, generations=2, max_new_tokens=4, beta=0.04, learning_rate=1e-3)
    assert seen and all(rates == {0.0} for rates in seen), seen
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}


def test_reward_length_correlation_is_near_one_for_a_length_reward(tiny_base: Path, tokenizer) -> None:
    cfg = config()
    model = expressive_model(tiny_base, cfg)
    # Answers must vary in length for a correlation: every token with TARGET in it also ends an
    # answer here (TRL stops at each of the model's eos ids), so lengths spread over 1..8 tokens.
    stops = [i for t, i in tokenizer.get_vocab().items() if TARGET in tokenizer.convert_tokens_to_string([t])]
    assert stops
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *stops]
    result = train_rl(
        model, tokenizer, PROMPTS, [completion_tokens], cfg,
        generations=4, max_new_tokens=8, beta=0.04, learning_rate=1e-2,
    )  # fmt: skip
    assert result.steps == 2  # one pass: 4 prompts, 2 a step
    assert result.reward_length_correlation is not None
    assert result.reward_length_correlation > 0.99
    assert 1 <= result.completion_length <= 8
    assert all(math.isfinite(v) for v in finite_figures(result))


def test_pearson() -> None:
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) == pytest.approx(0.9986, abs=1e-3)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pearson([1.0, 2.0], [1.0, 2.0]) is None  # too few samples
    assert pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # no variance


def test_reward_log_pairs_each_completions_total_reward_with_its_length() -> None:
    """TRL calls every reward function on one batch's completions list before the next batch."""
    from hitl_app.training.rl import _RewardLog

    recorder = _RewardLog()
    first = recorder.wrap(lambda prompts, completions, **kw: [1.0, None, 2.0])
    second = recorder.wrap(lambda prompts, completions, **kw: [0.5, None, None])
    batch, ids = [answer("a"), answer("b"), answer("c")], [[1], [1, 2], [1, 2, 3]]
    for func in (first, second):
        func(prompts=PROMPTS[:3], completions=batch, completion_ids=ids)
    one = recorder.wrap(lambda prompts, completions, **kw: [1.0])
    one(prompts=PROMPTS[:1], completions=[answer("d")], completion_ids=[[1, 2, 3, 4]])
    recorder.flush()
    # The second completion had no reward at all: TRL leaves it unscored, and so does the log.
    assert recorder.pairs == [(1.5, 1), (2.0, 3), (1.0, 4)]


def test_prompts_per_step_divides_the_prompts() -> None:
    assert prompts_per_step(4, 2) == 2
    assert prompts_per_step(4, 3) == 2  # 3 would leave one prompt out of the pass
    assert prompts_per_step(7, 4) == 1
    assert prompts_per_step(3, 8) == 3
    assert prompts_per_step(5, 0) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(prompts=[]), "no prompts"),
        (dict(prompts=["How is asthma treated?"]), "chat messages"),
        (dict(prompts=[[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]), "end with a user"),
        (dict(prompts=[[{"role": "user"}]]), "'role' and 'content'"),
        (dict(reward_funcs=[]), "no reward functions"),
        (dict(reward_funcs=["reward-model-name"]), "callables"),
        (dict(reward_funcs=[count_target, count_target]), "share the name"),
        (dict(generations=1), "at least 2"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(beta=-0.1), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(steps=0), "steps"),
        (dict(reference="sft"), "unknown reference"),
    ],
)
def test_bad_input_raises(tiny_base: Path, tokenizer, change: dict, message: str) -> None:
    cfg = config()
    model = attach_adapter(load_base(tiny_base, LoadOptions(device="cpu")), None, cfg)
    kwargs = dict(
        model=model, tokenizer=tokenizer, prompts=PROMPTS, reward_funcs=[count_target], cfg=cfg,
        generations=2, max_new_tokens=4, beta=0.04, learning_rate=1e-3,
    )  # fmt: skip
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        train_rl(**kwargs)


def test_rl_needs_a_peft_model(tiny_base: Path, tokenizer) -> None:
    base = load_base(tiny_base, LoadOptions(device="cpu"))
    with pytest.raises(ValueError, match="PeftModel"):
        train_rl(
            base, tokenizer, PROMPTS, [count_target], config(), generations=2, max_new_tokens=4, beta=0.04, learning_rate=1e-3
        )


# ----- safety_reward -----
RED_FLAG_QUESTION = "My father has sudden chest pain spreading to his left arm. What should he do?"
PAIN_QUESTION = "How much ibuprofen can I take for a sprained ankle?"


@pytest.fixture(scope="module")
def checker() -> SafetyChecker:
    return SafetyChecker()


def kinds(checker: SafetyChecker, question: str, text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.severity) for f in checker.check_answer(question, text)]


def test_safety_reward_penalises_a_red_flag_answered_without_urgency(checker: SafetyChecker) -> None:
    reward = safety_reward(checker)
    no_urgency, urgency = "He should rest and drink some water.", "Call 999 for an ambulance now."
    # The checker really flags the first and not the second.
    assert kinds(checker, RED_FLAG_QUESTION, no_urgency) == [(URGENCY_FLAG, "high")]
    assert kinds(checker, RED_FLAG_QUESTION, urgency) == []
    prompts = [prompt(RED_FLAG_QUESTION)] * 2
    assert reward(prompts=prompts, completions=[answer(no_urgency), answer(urgency)]) == [-1.0, 0.0]
    # Plain strings too (a non-conversational dataset).
    assert reward(prompts=[RED_FLAG_QUESTION] * 2, completions=[no_urgency, urgency]) == [-1.0, 0.0]


def test_safety_reward_penalises_each_high_medication_flag(checker: SafetyChecker) -> None:
    reward = safety_reward(checker)
    overdose, safe = "Take ibuprofen 1200 mg once.", "Take ibuprofen 400 mg three times a day with food."
    pregnant = "I am pregnant and sprained my ankle. How much ibuprofen can I take?"
    assert kinds(checker, PAIN_QUESTION, overdose) == [("overdose", "high")]
    assert kinds(checker, PAIN_QUESTION, safe) == []
    both = kinds(checker, pregnant, overdose)
    assert sorted(both) == [("contraindication", "high"), ("overdose", "high")]
    assert all(kind in MEDICATION_KINDS for kind, _ in both)
    rewards = reward(
        prompts=[prompt(PAIN_QUESTION), prompt(PAIN_QUESTION), prompt(pregnant)],
        completions=[answer(overdose), answer(safe), answer(overdose)],
    )
    assert rewards == [-1.0, 0.0, -2.0]
    assert reward.__name__ == "safety"


def test_safety_reward_reads_the_users_turns_not_the_system_message(checker: SafetyChecker) -> None:
    """A system message that mentions a red flag does not make every question a red-flag question."""
    reward = safety_reward(checker)
    messages = [
        {"role": "system", "content": "Send anyone with chest pain to A&E."},
        {"role": "user", "content": "How is asthma treated?"},
    ]
    assert reward(prompts=[messages], completions=[answer("An inhaled corticosteroid and a reliever.")]) == [0.0]


# ----- reward_model_reward -----
def test_reward_model_reward_scores_each_prompts_completions_together() -> None:
    calls = []

    def score(model, tokenizer, prompt_messages, completions):
        calls.append((model, tokenizer, prompt_messages, list(completions)))
        return [float(len(c)) for c in completions]

    reward = reward_model_reward("rm", "tok", score)
    assert reward.__name__ == "reward_model"
    first, second = prompt(QUESTIONS[0]), prompt(QUESTIONS[1])
    # TRL repeats each prompt once per generation, one after another.
    rewards = reward(
        prompts=[first, first, second, second],
        completions=[answer("a"), answer("bb"), answer("ccc"), answer("dddd")],
        completion_ids=[[1], [2], [3], [4]],
    )
    assert rewards == [1.0, 2.0, 3.0, 4.0]
    assert calls == [("rm", "tok", first, ["a", "bb"]), ("rm", "tok", second, ["ccc", "dddd"])]
    assert reward_model_reward("rm", "tok", score, name="clinician_rm").__name__ == "clinician_rm"


def test_reward_model_reward_checks_the_score_count() -> None:
    reward = reward_model_reward(None, None, lambda model, tokenizer, p, completions: [0.0])
    with pytest.raises(ValueError, match="1 scores for 2 completions"):
        reward(prompts=[PROMPTS[0]] * 2, completions=[answer("a"), answer("b")])
