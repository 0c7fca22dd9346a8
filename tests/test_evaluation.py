"""Evaluation estimators, checked against values computed by hand.

Hand-checkable models are real tiny ``LlamaForCausalLM``s whose next-token distribution is the
same after any context: every token embeds to the all-ones vector, the blocks' output
projections are zero (so the residual stream stays all ones), the final norm keeps only
coordinate 0, and column 0 of the untied lm_head holds the logits. A LoRA adapter on lm_head
(rank 1, reading coordinate 0) then adds a fixed vector to those logits, so a ``PeftModel`` with
several adapters is a set of constant distributions switched with ``set_adapter``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.evaluation.model_view import ModelView
from hitl_app.evaluation.logprobs import (
    batch_logprobs,
    completion_logprob,
    mean_completion_logprob,
    perplexity,
)
from hitl_app.evaluation.greedy import greedy_answers, mean_answer_length
from hitl_app.evaluation.preference_accuracy import preference_accuracy
from hitl_app.evaluation.sampled_kl import sample_kl

SYSTEM = {"role": "system", "content": "You are a careful medical assistant."}
QUESTIONS = [
    "What is the first-line treatment for hypertension in adults?",
    "Stroke signs?",
    "How is asthma treated, and when should a reliever inhaler be used?",
    "Chest pain?",
]
PROMPTS = [[SYSTEM, {"role": "user", "content": q}] for q in QUESTIONS]
ANSWERS = [
    "A thiazide diuretic or an ACE inhibitor.",
    "Face drooping, arm weakness, speech difficulty.",
    "Inhaled corticosteroids, and a reliever inhaler for symptoms.",
    "Call emergency services.",
]
TEXTS = [
    "Paracetamol 500 mg every 6 hours, at most 4 g a day.",
    "Asthma",
    "Sudden chest pain needs urgent assessment: call emergency services now.",
    "Stroke signs: face drooping, arm weakness, speech difficulty.",
    "",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    return load_tokenizer(tiny_base)


@pytest.fixture(scope="module")
def random_model(tiny_base: Path):
    return load_base(tiny_base, LoadOptions(device="cpu"))


def constant_model(tokenizer, logits: torch.Tensor):
    """A Llama whose next-token logits are ``logits`` after any context."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, rms_norm_eps=1e-12,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def with_logit_adapters(model, deltas: dict[str, torch.Tensor]):
    """Wrap ``model`` in a PeftModel with one rank-1 lm_head adapter per name, adding deltas[name]."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=1, lora_alpha=1, target_modules=["lm_head"])
    names = list(deltas)
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    lm_head = peft_model.base_model.model.lm_head
    with torch.no_grad():
        for name, delta in deltas.items():
            lm_head.lora_A[name].weight.zero_()
            lm_head.lora_A[name].weight[0, 0] = 1.0
            lm_head.lora_B[name].weight[:, 0] = delta
    peft_model.set_adapter(names[0])
    return peft_model.eval()


def random_logits(tokenizer, seed: int, eos: float | None = -30.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(tokenizer), generator=g)
    if eos is not None:
        logits[tokenizer.eos_token_id] = eos
    return logits


def kl_exact(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return float((lp.exp() * (lp - lq)).sum())


def user(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ----- perplexity -----
@pytest.mark.parametrize("add_bos", [None, True, False])
def test_perplexity_under_uniform_is_vocabulary_size(tokenizer, add_bos):
    model = constant_model(tokenizer, torch.zeros(len(tokenizer)))
    result = perplexity(model, tokenizer, TEXTS, batch_size=2, add_bos=add_bos)
    assert result.perplexity == pytest.approx(len(tokenizer), rel=1e-5)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    expected_tokens = sum(lengths) if add_bos else sum(n - 1 for n in lengths if n >= 2)
    assert result.n_tokens == expected_tokens


@pytest.mark.parametrize("add_bos", [True, False])
def test_perplexity_under_a_fixed_distribution_is_exp_cross_entropy(tokenizer, add_bos):
    logits = random_logits(tokenizer, seed=1, eos=None) * 2
    model = constant_model(tokenizer, logits)
    logp = torch.log_softmax(logits.double(), -1)
    predicted = []
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        predicted += ids if add_bos else ids[1:]
    expected = math.exp(-float(logp[predicted].mean()))
    result = perplexity(model, tokenizer, TEXTS, batch_size=3, add_bos=add_bos)
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.n_tokens == len(predicted)


def test_perplexity_batched_equals_unbatched(tokenizer, random_model):
    one = perplexity(random_model, tokenizer, TEXTS, batch_size=1)
    many = perplexity(random_model, tokenizer, TEXTS, batch_size=8)
    assert many.mean_nll == pytest.approx(one.mean_nll, abs=1e-5)
    assert many.n_tokens == one.n_tokens


def test_perplexity_rejects_texts_with_nothing_to_predict(tokenizer, random_model):
    with pytest.raises(ValueError, match="no token to predict"):
        perplexity(random_model, tokenizer, ["", "a"], add_bos=False)


# ----- log-probs of completions -----
@torch.no_grad()
def unbatched_logprob(model, tokenizer, prompt, completion: str, reduction: str = "mean") -> float:
    """The reference the batched scorer is checked against: one sequence, one forward pass, no padding."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=False
    )
    assert full_ids[: len(prompt_ids)] == prompt_ids
    ids = torch.tensor([full_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)  # position t predicts t+1
    scored = logprobs.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(prompt_ids) - 1 :]
    return float(scored.sum() if reduction == "sum" else scored.mean())


def test_batch_logprobs_match_an_unbatched_pass_and_do_not_depend_on_batching(tokenizer, random_model):
    one = batch_logprobs(random_model, tokenizer, PROMPTS, ANSWERS, batch_size=1)
    many = batch_logprobs(random_model, tokenizer, PROMPTS, ANSWERS, batch_size=3)
    lengths = {s.n_tokens for s in one}
    assert len(lengths) > 1, "the answers must differ in length for padding to matter"
    for prompt, answer, a, b in zip(PROMPTS, ANSWERS, one, many):
        assert a.n_tokens == b.n_tokens
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        assert b.sum == pytest.approx(unbatched_logprob(random_model, tokenizer, prompt, answer, "sum"), abs=1e-4)
        assert b.mean == pytest.approx(unbatched_logprob(random_model, tokenizer, prompt, answer, "mean"), abs=1e-5)


def test_completion_logprob_is_one_reply_of_batch_logprobs(tokenizer, random_model):
    for prompt, answer in zip(PROMPTS, ANSWERS):
        for reduction in ("sum", "mean"):
            expected = unbatched_logprob(random_model, tokenizer, prompt, answer, reduction)
            assert completion_logprob(random_model, tokenizer, prompt, answer, reduction) == pytest.approx(expected, abs=1e-4)


def test_batch_logprobs_refuse_or_truncate_a_reply_longer_than_the_context(tokenizer, random_model):
    limit = random_model.config.max_position_embeddings
    long_reply = "word " * (2 * limit)
    with pytest.raises(ValueError, match="longer than the model's context"):
        batch_logprobs(random_model, tokenizer, [PROMPTS[0]], [long_reply])
    (cut,) = batch_logprobs(random_model, tokenizer, [PROMPTS[0]], [long_reply], truncate=True)
    prompt_ids = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert cut.n_tokens == limit - len(prompt_ids)
    (short,) = batch_logprobs(random_model, tokenizer, [PROMPTS[0]], [ANSWERS[0]], truncate=True)
    assert short.sum == pytest.approx(unbatched_logprob(random_model, tokenizer, PROMPTS[0], ANSWERS[0], "sum"), abs=1e-4)


def test_mean_completion_logprob_agrees_with_an_unbatched_pass(tokenizer, random_model):
    expected = sum(unbatched_logprob(random_model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)) / len(ANSWERS)
    assert mean_completion_logprob(random_model, tokenizer, PROMPTS, ANSWERS) == pytest.approx(expected, abs=1e-5)
    sums = [unbatched_logprob(random_model, tokenizer, p, a, "sum") for p, a in zip(PROMPTS, ANSWERS)]
    n = sum(s.n_tokens for s in batch_logprobs(random_model, tokenizer, PROMPTS, ANSWERS))
    pooled = mean_completion_logprob(random_model, tokenizer, PROMPTS, ANSWERS, weighting="token")
    assert pooled == pytest.approx(sum(sums) / n, abs=1e-5)


def test_scoring_restores_training_mode(tokenizer, random_model):
    random_model.train()
    try:
        batch_logprobs(random_model, tokenizer, PROMPTS[:1], ANSWERS[:1])
        assert random_model.training and all(m.training for m in random_model.modules())
    finally:
        random_model.eval()


# ----- preferences -----
def scored_tokens(tokenizer, prompt, answer) -> list[int]:
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=True, return_dict=False
    )
    return full[len(prompt_ids) :]


def test_preference_accuracy_matches_hand_computed_rewards(tokenizer):
    base_logits = random_logits(tokenizer, seed=2, eos=None)
    # The new version makes the tokens of "Call emergency services." much more likely.
    boosted = tokenizer("Call emergency services.", add_special_tokens=False)["input_ids"]
    delta = torch.zeros(len(tokenizer))
    delta[boosted] = 4.0
    model = with_logit_adapters(constant_model(tokenizer, base_logits), {"default": delta})
    good, other = "Call emergency services.", "Rest at home."
    pairs = [
        {"prompt": user("Chest pain?"), "chosen": reply(good), "rejected": reply(other)},
        {"prompt": user("Stroke signs?"), "chosen": good, "rejected": "Wait and see."},  # plain strings
        {"prompt": user("Asthma?"), "chosen": reply(other), "rejected": reply(good)},
    ]
    new_lp = torch.log_softmax((base_logits + delta).double(), -1)
    base_lp = torch.log_softmax(base_logits.double(), -1)

    def reward(pair, key, reference):
        text = pair[key] if isinstance(pair[key], str) else pair[key][0]["content"]
        ids = scored_tokens(tokenizer, pair["prompt"], text)
        return float(new_lp[ids].sum() - (base_lp[ids].sum() if reference else 0.0))

    for reference, arg in [(True, "base"), (False, None)]:
        margins = [reward(p, "chosen", reference) - reward(p, "rejected", reference) for p in pairs]
        result = preference_accuracy(model, tokenizer, pairs, reference=arg, beta=0.5, batch_size=2)
        assert result.n == 3
        assert result.accuracy == pytest.approx(sum(m > 0 for m in margins) / 3)
        assert result.mean_margin == pytest.approx(0.5 * sum(margins) / 3, abs=1e-4)
    # Against the base, only the boost counts: right on the first two pairs, wrong on the third.
    assert preference_accuracy(model, tokenizer, pairs).accuracy == pytest.approx(2 / 3)


def test_preference_accuracy_lists_every_malformed_pair(tokenizer, random_model):
    pairs = [{"prompt": user("q"), "chosen": [], "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": 3}]
    with pytest.raises(ValueError) as info:
        preference_accuracy(random_model, tokenizer, pairs, reference=None)
    message = str(info.value)
    assert "pair 0: 'chosen'" in message and "pair 1: 'rejected'" in message and "pair 1: 'prompt'" in message


# ----- KL on sampled answers -----
def test_sample_kl_between_constant_distributions(tokenizer):
    p_logits, q_logits = random_logits(tokenizer, seed=3), random_logits(tokenizer, seed=4)
    policy, reference = constant_model(tokenizer, p_logits), constant_model(tokenizer, q_logits)
    n_new = 16
    result = sample_kl(
        policy, reference, tokenizer, PROMPTS, max_new_tokens=n_new, samples_per_prompt=16, batch_size=32
    )
    kl = kl_exact(p_logits, q_logits)
    assert result.n_sequences == 64 and result.n_tokens == 64 * n_new  # EOS is never sampled
    # Rao-Blackwellised: exact at every position, so every sequence gives n_new * KL(p || q).
    assert result.kl == pytest.approx(n_new * kl, abs=1e-4)
    assert result.kl_per_token == pytest.approx(kl, abs=1e-5)
    assert max(abs(s.kl - n_new * kl) for s in result.samples) < 1e-4
    # Monte-Carlo: unbiased, within 4 standard errors of the per-token log-ratio.
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    sd = math.sqrt(float((lp.exp() * (lp - lq - kl) ** 2).sum()))
    assert abs(result.kl_mc_per_token - kl) < 4 * sd / math.sqrt(result.n_tokens)
    assert result.kl_mc_stderr > 0 and result.kl_stderr < 1e-4


def test_sample_kl_samples_follow_the_policy_distribution(tokenizer):
    # Every token is drawn from softmax(logits), with no top-k cut: generate's default keeps 50.
    logits = random_logits(tokenizer, seed=5)
    model = constant_model(tokenizer, logits)
    result = sample_kl(model, model, tokenizer, PROMPTS, max_new_tokens=16, samples_per_prompt=16, batch_size=32)
    probs = torch.softmax(logits.double(), -1)
    tail = torch.ones_like(probs, dtype=torch.bool)
    tail[probs.topk(50).indices] = False
    mass = float(probs[tail].sum())
    tokens = torch.tensor([t for s in result.samples for t in s.token_ids])
    share = float(tail[tokens].double().mean())
    assert abs(share - mass) < 4 * math.sqrt(mass * (1 - mass) / tokens.numel())
    assert result.kl == 0.0 and result.kl_mc == 0.0


def test_sample_kl_stops_at_eos_and_counts_it(tokenizer):
    p_logits = random_logits(tokenizer, seed=6, eos=None)
    p_logits[tokenizer.eos_token_id] = float(torch.logsumexp(p_logits, 0)) - math.log(9)  # p(eos) = 0.1
    q_logits = random_logits(tokenizer, seed=7, eos=None)
    result = sample_kl(
        constant_model(tokenizer, p_logits), constant_model(tokenizer, q_logits), tokenizer, PROMPTS,
        max_new_tokens=24, samples_per_prompt=8, batch_size=32,
    )  # fmt: skip
    kl = kl_exact(p_logits, q_logits)
    lengths = [len(s.token_ids) for s in result.samples]
    assert len(set(lengths)) > 1 and max(lengths) <= 24
    for s in result.samples:
        assert s.kl == pytest.approx(len(s.token_ids) * kl, abs=1e-4)
        if len(s.token_ids) < 24:
            assert s.token_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.eos_token_id not in s.token_ids[:-1]
    assert result.n_tokens == sum(lengths)


def test_sample_kl_switches_adapters_of_one_peft_model(tokenizer):
    base_logits = random_logits(tokenizer, seed=8)
    deltas = {"default": random_logits(tokenizer, 9, eos=0.0), "serving": random_logits(tokenizer, 10, eos=0.0)}
    model = with_logit_adapters(constant_model(tokenizer, base_logits), deltas)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    new, serving = base_logits + deltas["default"], base_logits + deltas["serving"]
    cases = [
        (model, ModelView.base(model), kl_exact(new, base_logits)),
        (ModelView.adapter(model, "default"), ModelView.adapter(model, "serving"), kl_exact(new, serving)),
        (ModelView.adapter(model, "serving"), model, kl_exact(serving, new)),
        (ModelView.base(model), ModelView.adapter(model, "serving"), kl_exact(base_logits, serving)),
    ]
    for policy, reference, kl in cases:
        result = sample_kl(policy, reference, tokenizer, PROMPTS[:2], max_new_tokens=8, samples_per_prompt=2)
        assert result.kl_per_token == pytest.approx(kl, abs=1e-5)
        assert model.active_adapter == "default"
        assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with pytest.raises(ValueError, match="loaded adapters: \\['default', 'serving'\\]"):
        ModelView.adapter(model, "v0009")


def test_sample_kl_of_a_model_with_itself_is_zero(tokenizer, random_model):
    # Prompts of different lengths share a left-padded batch; the reference re-reads it.
    result = sample_kl(
        random_model, random_model, tokenizer, PROMPTS, max_new_tokens=12, samples_per_prompt=2, batch_size=8
    )
    assert abs(result.kl) < 1e-5 and abs(result.kl_mc) < 1e-5
    assert max(abs(s.kl_mc) for s in result.samples) < 1e-5


def test_sample_kl_same_answer_with_a_view_or_a_second_model(tokenizer, tiny_base, random_model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(11)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    tuned = get_peft_model(load_base(tiny_base, LoadOptions(device="cpu")), config).eval()
    via_view = sample_kl(tuned, ModelView.base(tuned), tokenizer, PROMPTS, max_new_tokens=8, batch_size=3)
    via_model = sample_kl(tuned, random_model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3)
    assert [s.token_ids for s in via_view.samples] == [s.token_ids for s in via_model.samples]
    assert via_view.kl > 1e-3
    assert via_view.kl == pytest.approx(via_model.kl, abs=1e-5)
    assert via_view.kl_mc == pytest.approx(via_model.kl_mc, abs=1e-5)


def test_sample_kl_is_seeded_and_leaves_the_global_rng_alone(tokenizer, random_model):
    state = torch.get_rng_state()
    first = sample_kl(random_model, random_model, tokenizer, PROMPTS, max_new_tokens=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    again = sample_kl(random_model, random_model, tokenizer, PROMPTS, max_new_tokens=8, seed=1)
    other = sample_kl(random_model, random_model, tokenizer, PROMPTS, max_new_tokens=8, seed=2)
    assert [s.token_ids for s in first.samples] == [s.token_ids for s in again.samples]
    assert [s.token_ids for s in first.samples] != [s.token_ids for s in other.samples]
    assert [s.prompt_index for s in first.samples] == [0, 1, 2, 3]


def test_sample_kl_refuses_a_distribution_changing_generation_config(tokenizer):
    model = constant_model(tokenizer, torch.zeros(len(tokenizer)))
    model.generation_config.suppress_tokens = [5]
    model.generation_config.min_p = 0.1
    with pytest.raises(ValueError, match="min_p=0.1.*suppress_tokens=\\[5\\]"):
        sample_kl(model, model, tokenizer, PROMPTS)


def test_mean_answer_length(tokenizer):
    assert mean_answer_length(["one two three", "four"]) == 2.0
    n = len(tokenizer("Call emergency services.", add_special_tokens=False)["input_ids"])
    assert mean_answer_length(["Call emergency services.", ""], tokenizer) == n / 2
    with pytest.raises(ValueError):
        mean_answer_length([])


def test_greedy_answers_in_a_batch_equal_each_answer_alone(tokenizer, random_model):
    prompts = [[{"role": "user", "content": q}] for q in ("Hi", "What is the normal adult resting heart rate?", "Dose?")]
    random_model.train()
    batched = greedy_answers(random_model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert random_model.training  # the mode it had is restored
    random_model.eval()
    alone = [greedy_answers(random_model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone  # left padding and batching change nothing
    assert all(0 <= a.tokens <= 6 for a in batched)
    assert any(a.tokens > 0 for a in batched)
