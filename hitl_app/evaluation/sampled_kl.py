"""KL(policy || reference) estimated on answers sampled from the policy."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..core.chat import Message
from .logprobs import check_fits, length_batches
from .model_view import ModelView, as_view, device_of, entered, pad_token_id


@dataclass(frozen=True)
class KLSample:
    """One answer sampled from the policy and its two per-sequence KL estimates."""

    prompt_index: int
    token_ids: list[int]  # the sampled continuation, EOS included when one was sampled
    text: str  # decoded without special tokens
    kl: float  # sum over positions of the exact KL between next-token distributions
    kl_mc: float  # log p(y|x) - log q(y|x)


@dataclass(frozen=True)
class KLResult:
    """KL(policy || reference) estimated on answers sampled from the policy (nats).

    Args:
        kl: mean over samples of the per-sequence Rao-Blackwellised estimate.
        kl_per_token: sum of those estimates / total sampled tokens.
        kl_stderr: standard error of ``kl`` over samples (0 with one sample).
        kl_mc: mean over samples of log p(y|x) - log q(y|x), the plain Monte-Carlo estimate.
        kl_mc_per_token: its sum / total sampled tokens.
        kl_mc_stderr: standard error of ``kl_mc``.
        n_sequences: samples drawn (prompts x samples_per_prompt).
        n_tokens: sampled tokens, EOS included.
        samples: the answers, in prompt order.
    """

    kl: float
    kl_per_token: float
    kl_stderr: float
    kl_mc: float
    kl_mc_per_token: float
    kl_mc_stderr: float
    n_sequences: int
    n_tokens: int
    samples: list[KLSample]


# Settings that can only be neutral when unset: sample_kl refuses a model whose generation
# config sets any of them, because the samples would not follow the model's distribution.
_DISTRIBUTION_CHANGING = (
    "min_p", "top_h", "bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
    "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty",
    "watermarking_config", "stop_strings", "max_time",
)  # fmt: skip


def _ancestral_config(model, max_new_tokens: int, eos_ids: list[int], pad_id: int):
    """A GenerationConfig that samples from the model's own distribution (temperature 1, no cut)."""
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    values = {name: getattr(own, name, None) for name in _DISTRIBUTION_CHANGING}
    set_fields = [f"{name}={value!r}" for name, value in values.items() if value not in (None, [])]
    if set_fields:
        raise ValueError(
            "the model's generation_config changes the sampling distribution; unset these fields "
            f"for evaluation: {', '.join(set_fields)}"
        )
    return GenerationConfig(
        do_sample=True, num_beams=1, temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0,
        epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, min_new_tokens=0,
        guidance_scale=1.0, renormalize_logits=False, remove_invalid_values=False,
        max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True,
        output_logits=True, return_dict_in_generate=True,
    )  # fmt: skip


def _eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(int(i) for i in ids)


def _accepts_logits_to_keep(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _stderr(values: torch.Tensor) -> float:
    return float(values.std(unbiased=True) / math.sqrt(values.numel())) if values.numel() > 1 else 0.0


@torch.no_grad()
def sample_kl(
    policy: ModelView | Any,
    reference: ModelView | Any,
    tokenizer,
    prompts: list[list[Message]],
    max_new_tokens: int = 32,
    samples_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 8,
) -> KLResult:
    """Estimate KL(p || q) between the answer distributions of ``policy`` (p) and ``reference`` (q).

    For a chat prompt x, answers y = (y_1, ..., y_T) are sampled from p by ancestral sampling
    at temperature 1 with no top-k/top-p cut, stopping at EOS (which counts as a token) or after
    N = ``max_new_tokens`` tokens. With c_t = (x, y_<t), each sample gives two estimates of
    KL(p(.|x) || q(.|x)), the KL between the distributions of answers truncated to N tokens:

    - Monte-Carlo: log p(y|x) - log q(y|x) = sum_t [log p(y_t|c_t) - log q(y_t|c_t)];
    - Rao-Blackwellised: sum_t KL(p(.|c_t) || q(.|c_t)) = sum_t sum_v p(v|c_t) [log p(v|c_t)
      - log q(v|c_t)], the exact KL over the vocabulary at every sampled position, computed
      from both models' logits along the sampled trajectory.

    Both are unbiased for the same quantity (the expectation over prompts of the KL of the
    truncated answers); the second replaces each sampled log-ratio by its expectation given the
    prefix, so it is never negative and its variance is never larger. ``kl`` and ``kl_mc``
    average the per-sequence sums over prompts x samples_per_prompt samples; ``*_per_token``
    divide the summed estimates by the total number of sampled tokens (a ratio, comparable
    across answer lengths).

    The policy's logits are the ones ``generate`` sampled from (incremental decoding); the
    reference scores the same left-padded sequences in one forward pass, so a model compared
    with itself gives 0 up to float rounding (about 1e-7). Sampling is batched and seeded: the
    same inputs, seed and batch_size give the same samples, and the global RNG state is left as
    it was.

    Args:
        policy: the model sampled from (p): a model or a ``ModelView``.
        reference: the model compared against (q): e.g. ``ModelView.base(m)`` for the base or
            ``ModelView.adapter(m, "serving")`` for the version now served. Must share the
            tokenizer (and vocabulary) with the policy.
        tokenizer: the shared tokenizer, with a chat template.
        prompts: chat prompts (the generation prompt is added).
        max_new_tokens: N, the most tokens sampled per answer.
        samples_per_prompt: answers sampled per prompt.
        seed: seed of the sampling.
        batch_size: sequences per generate call.

    Raises:
        ValueError: no prompts, a prompt too long for N more tokens, or a generation_config that
            would change the sampling distribution.
    """
    (result,) = sample_kl_many(
        policy, [reference], tokenizer, prompts, max_new_tokens, samples_per_prompt, seed=seed, batch_size=batch_size
    )
    return result


@torch.no_grad()
def sample_kl_many(
    policy: ModelView | Any,
    references: Sequence[ModelView | Any],
    tokenizer,
    prompts: list[list[Message]],
    max_new_tokens: int = 32,
    samples_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 8,
) -> list[KLResult]:
    """``sample_kl`` against several references on one set of samples: KL(p || q) for each q.

    The answers are sampled from the policy once and each reference scores them in one forward
    pass per batch, so every result equals ``sample_kl(policy, reference, ...)`` with the same
    arguments (the same samples), at the cost of one sampling.

    Raises:
        ValueError: no references, or as ``sample_kl``.
    """
    if not prompts:
        raise ValueError("no prompts to sample from")
    if not references:
        raise ValueError("no reference to compare the policy with")
    policy, views = as_view(policy), [as_view(r) for r in references]
    pad_id = pad_token_id(tokenizer)
    eos_ids = _eos_ids(policy.model, tokenizer)
    config = _ancestral_config(policy.model, max_new_tokens, eos_ids, pad_id)
    encoded = [
        list(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False))
        for p in prompts
    ]
    check_fits(policy.model, [len(ids) + max_new_tokens for ids in encoded], "prompt + max_new_tokens")
    rows = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    found: list[list[KLSample | None]] = [[None] * len(rows) for _ in views]
    device = device_of(policy.model)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in length_batches([len(ids) for _, ids in rows], batch_size):
            scored = _kl_batch(policy, views, [rows[r][1] for r in batch], config, eos_ids, pad_id)
            texts = tokenizer.batch_decode([tokens for tokens, _ in scored], skip_special_tokens=True)
            for r, (tokens, estimates), text in zip(batch, scored, texts):
                for k, (kl, kl_mc) in enumerate(estimates):
                    found[k][r] = KLSample(rows[r][0], tokens, text.strip(), kl, kl_mc)
    return [_result([s for s in per_reference if s is not None]) for per_reference in found]


def _result(samples: list[KLSample]) -> KLResult:
    kls = torch.tensor([s.kl for s in samples], dtype=torch.float64)
    mcs = torch.tensor([s.kl_mc for s in samples], dtype=torch.float64)
    n_tokens = sum(len(s.token_ids) for s in samples)
    return KLResult(
        kl=float(kls.mean()),
        kl_per_token=float(kls.sum()) / n_tokens,
        kl_stderr=_stderr(kls),
        kl_mc=float(mcs.mean()),
        kl_mc_per_token=float(mcs.sum()) / n_tokens,
        kl_mc_stderr=_stderr(mcs),
        n_sequences=len(samples),
        n_tokens=n_tokens,
        samples=samples,
    )


def _kl_batch(
    policy: ModelView, references: list[ModelView], prompts: list[list[int]], config, eos_ids: list[int], pad_id: int
) -> list[tuple[list[int], list[tuple[float, float]]]]:
    """Sample one answer per prompt from the policy; return (tokens, [(RB estimate, MC estimate) per reference]) per answer."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for j, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[j, width - len(prompt) :] = torch.tensor(prompt)
        mask[j, width - len(prompt) :] = 1
    device = device_of(policy.model)
    with entered(policy) as model:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
    new = out.sequences[:, width:]  # (B, n); finished rows are padded after their EOS
    n = new.shape[1]
    policy_lp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (B, n, V): what was sampled from
    is_eos = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    no_eos = torch.full_like(new[:, 0], n)
    lengths = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, no_eos)  # EOS counts as a token
    live = torch.arange(n, device=new.device)[None, :] < lengths[:, None]  # (B, n)

    # Each reference reads the same left-padded rows in one pass; the last token is never context.
    full_mask = torch.cat([mask.to(new.device), live.long()], dim=1)[:, :-1]
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    probs = policy_lp.exp()
    live = live.to(policy_lp.device)
    estimates: list[tuple[list[float], list[float]]] = []
    for reference in references:
        kwargs = {"logits_to_keep": n} if _accepts_logits_to_keep(reference.model) else {}
        with entered(reference) as model:
            ref_device = device_of(model)
            ref_logits = model(
                input_ids=out.sequences[:, :-1].to(ref_device),
                attention_mask=full_mask.to(ref_device),
                position_ids=positions.to(ref_device),
                **kwargs,
            ).logits[:, -n:]  # (B, n, V): position t predicts new[:, t]
        ref_lp = torch.log_softmax(ref_logits.float(), dim=-1).to(policy_lp.device)
        # 0 * log 0 is 0: a token the policy never samples adds nothing, even where its logit is -inf.
        per_position = torch.where(probs > 0, probs * (policy_lp - ref_lp), torch.zeros_like(probs)).sum(-1)  # (B, n)
        ratio = (policy_lp - ref_lp).gather(-1, new[..., None].to(policy_lp.device)).squeeze(-1)  # (B, n)
        estimates.append(((per_position * live).sum(1).tolist(), (ratio * live).sum(1).tolist()))
    return [
        (new[j, : lengths[j]].tolist(), [(kl[j], kl_mc[j]) for kl, kl_mc in estimates]) for j in range(len(prompts))
    ]
