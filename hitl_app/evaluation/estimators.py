"""Estimators used to evaluate a new model version before it is published.

Every function is stateless: it takes a model (or a ``ModelView``), a tokenizer and data, runs
batched forward passes under ``torch.no_grad()`` and returns a small dataclass or a float.

- ``batch_logprobs``: per-token log-probs of completions after chat prompts.
- ``completion_logprob``: the same for one completion, reduced to its mean or sum.
- ``mean_completion_logprob``: their mean (e.g. clinicians' edited answers on held-out edits).
- ``preference_accuracy``: DPO implicit-reward accuracy and margin on held-out pairs.
- ``perplexity``: exp(mean NLL) over plain texts.
- ``sample_kl``: KL(policy || reference) on answers sampled from the policy.
- ``mean_answer_length``: words or tokens per answer.

A ``ModelView`` is a model plus the context it must run under, which is how one ``PeftModel``
serves as several models: ``ModelView.base(m)`` (adapter disabled), ``ModelView.adapter(m,
"serving")`` (another loaded adapter, switched with ``set_adapter`` and switched back). Views
change the model's state while they are entered, so a model shared with the serving path must
be evaluated under its lock. Every function puts the model in eval mode (no dropout) for the
call and restores each module's previous mode afterwards.

A completion is rendered as the prompt with the generation prompt, then prompt + assistant
message; the tokens after the prompt are scored, including the template's end-of-turn tokens.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Literal, Sequence

import torch

from ..core.chat import Message


# ----- models and views -----
@dataclass(frozen=True)
class ModelView:
    """A model together with the context its forward passes and generation must run under.

    Args:
        model: a causal LM (``transformers`` model or ``PeftModel``).
        context: a zero-argument callable returning a context manager, entered around every use
            of ``model`` (``nullcontext`` for the model as it is).
    """

    model: Any
    context: Callable[[], ContextManager[Any]] = nullcontext

    @classmethod
    def base(cls, peft_model) -> "ModelView":
        """The base model under a ``PeftModel``: every adapter disabled."""
        if not hasattr(peft_model, "disable_adapter"):
            raise ValueError(f"{type(peft_model).__name__} has no adapters to disable; pass the base model itself")
        return cls(peft_model, peft_model.disable_adapter)

    @classmethod
    def adapter(cls, peft_model, adapter_name: str) -> "ModelView":
        """``peft_model`` with ``adapter_name`` active; the previously active adapter is restored after.

        Raises:
            ValueError: the adapter is not loaded (the error lists the loaded ones).
        """
        loaded = sorted(getattr(peft_model, "peft_config", {}) or {})
        if adapter_name not in loaded:
            raise ValueError(f"no adapter {adapter_name!r} in the model; loaded adapters: {loaded or 'none'}")
        return cls(peft_model, lambda: _use_adapter(peft_model, adapter_name))


def _as_view(model: ModelView | Any) -> ModelView:
    return model if isinstance(model, ModelView) else ModelView(model)


@contextmanager
def _use_adapter(model, name: str) -> Iterator[None]:
    # set_adapter also marks the adapter trainable; put every requires_grad flag back afterwards.
    previous = model.active_adapter
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for n, p in model.named_parameters():
            if n in grads and p.requires_grad != grads[n]:
                p.requires_grad_(grads[n])


@contextmanager
def _entered(view: ModelView) -> Iterator[Any]:
    """Eval mode (restored module by module afterwards) and the view's context."""
    modes = [(m, m.training) for m in view.model.modules()]
    view.model.eval()
    try:
        with view.context():
            yield view.model
    finally:
        for module, training in modes:
            module.training = training


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def _context_length(model) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


# ----- scoring fixed token sequences -----
@dataclass(frozen=True)
class TokenScores:
    """Log-probs of the scored tokens of one sequence.

    Args:
        logprobs: (n_tokens,) float32 on the CPU, natural log.
    """

    logprobs: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """How many tokens were scored."""
        return int(self.logprobs.numel())

    @property
    def sum(self) -> float:
        """The sequence log-probability (the quantity DPO's implicit reward is built from)."""
        return float(self.logprobs.sum())

    @property
    def mean(self) -> float:
        """The per-token mean, comparable across answers of different lengths (nan when empty)."""
        return float(self.logprobs.mean()) if self.n_tokens else math.nan


def _render(tokenizer, prompt: list[Message], completion: str) -> tuple[list[int], int]:
    """Token ids of prompt + reply and where the reply starts."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=False
    )
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not extend the prompt with the reply; cannot score it")
    return list(full_ids), len(prompt_ids)


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    # Longest first, so each batch holds rows of similar length and little padding.
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _check_fits(model, lengths: Sequence[int], what: str) -> None:
    limit = _context_length(model)
    too_long = [f"{what} {i} ({n} tokens)" for i, n in enumerate(lengths) if limit is not None and n > limit]
    if too_long:
        raise ValueError(f"longer than the model's context of {limit} tokens: {', '.join(too_long)}; shorten them")


@torch.no_grad()
def _score_rows(
    view: ModelView, rows: list[list[int]], starts: list[int], pad_id: int, batch_size: int
) -> list[torch.Tensor]:
    """Log-prob of every token ``rows[i][starts[i]:]`` given the tokens before it (starts >= 1).

    Rows are right-padded, so each real token sits at the position it has alone, and the causal
    mask keeps padding (always after the real tokens) out of their context.
    """
    out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    with _entered(view) as model:
        device = _device(model)
        for batch in _length_batches([len(r) for r in rows], batch_size):
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, i in enumerate(batch):
                ids[j, : len(rows[i])] = torch.tensor(rows[i])
                mask[j, : len(rows[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
            for j, i in enumerate(batch):
                start, end = starts[i], len(rows[i])
                row_logits = logits[j, start - 1 : end - 1].float()  # position t predicts token t+1
                targets = ids[j, start:end].to(row_logits.device)
                token_lp = row_logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(row_logits, -1)
                out[i] = token_lp.cpu()
    return out


def batch_logprobs(
    model: ModelView | Any,
    tokenizer,
    prompts: list[list[Message]],
    completions: list[str],
    batch_size: int = 8,
    truncate: bool = False,
) -> list[TokenScores]:
    """Per-token log-probs of each completion as the assistant's reply to its chat prompt.

    The tokens the full conversation adds after ``apply_chat_template(prompt,
    add_generation_prompt=True)`` are scored, which includes the template's end-of-turn tokens.
    Batched with right padding; results are in input order.

    Args:
        model: a model or a ``ModelView``.
        tokenizer: its tokenizer, with a chat template.
        prompts: one list of chat messages per completion.
        completions: the assistant replies to score.
        batch_size: sequences per forward pass.
        truncate: score only the part of a reply that fits the model's context, instead of
            refusing a sequence that is longer (the prompt itself must still fit, with one token).

    Raises:
        ValueError: lengths differ, the template does not extend the prompt, or a sequence is
            longer than the model's context (without ``truncate``).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; pass one prompt per completion")
    rendered = [_render(tokenizer, p, c) for p, c in zip(prompts, completions)]
    rows = [ids for ids, _ in rendered]
    limit = _context_length(_as_view(model).model)
    if truncate and limit is not None:
        _check_fits(_as_view(model).model, [start + 1 for _, start in rendered], "prompt")
        rows = [r[:limit] for r in rows]
    _check_fits(_as_view(model).model, [len(r) for r in rows], "sequence")
    scores = _score_rows(_as_view(model), rows, [s for _, s in rendered], _pad_id(tokenizer), batch_size)
    return [TokenScores(lp) for lp in scores]


def completion_logprob(
    model: ModelView | Any,
    tokenizer,
    prompt: list[Message],
    completion: str,
    reduction: Literal["mean", "sum"] = "mean",
) -> float:
    """Log-probability of ``completion`` as the assistant's reply to ``prompt`` (see ``batch_logprobs``).

    ``reduction="mean"`` gives the per-token mean, comparable across answers of different lengths;
    ``"sum"`` gives the sequence log-probability, the quantity DPO's implicit reward is built from.

    Raises:
        ValueError: as ``batch_logprobs``.
    """
    (scores,) = batch_logprobs(model, tokenizer, [prompt], [completion], batch_size=1)
    return scores.sum if reduction == "sum" else scores.mean


def mean_completion_logprob(
    model: ModelView | Any,
    tokenizer,
    prompts: list[list[Message]],
    completions: list[str],
    batch_size: int = 8,
    weighting: Literal["answer", "token"] = "answer",
) -> float:
    """Mean per-token log-prob of completions (e.g. clinicians' edited answers on held-out edits).

    ``weighting="answer"`` averages each answer's per-token mean (every answer weighs the same;
    the mean of ``completion_logprob`` over the answers); ``"token"`` pools all tokens
    (long answers weigh more).

    Raises:
        ValueError: no completions, or as ``batch_logprobs``.
    """
    if not completions:
        raise ValueError("no completions to score")
    scores = batch_logprobs(model, tokenizer, prompts, completions, batch_size)
    if weighting == "token":
        return sum(s.sum for s in scores) / sum(s.n_tokens for s in scores)
    return sum(s.mean for s in scores) / len(scores)


# ----- preferences -----
@dataclass(frozen=True)
class PairAccuracy:
    """Held-out preference pairs under the DPO implicit reward.

    Args:
        accuracy: share of pairs whose chosen reward is strictly greater than the rejected one.
        mean_margin: mean of reward(chosen) - reward(rejected), in nats times ``beta``.
        n: number of pairs.
    """

    accuracy: float
    mean_margin: float
    n: int


def _reply_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str):
            return value[0]["content"]
    return None


def preference_accuracy(
    model: ModelView | Any,
    tokenizer,
    pairs: list[dict],
    reference: ModelView | Any | Literal["base"] | None = "base",
    beta: float = 1.0,
    batch_size: int = 8,
) -> PairAccuracy:
    """Share of DPO pairs the model prefers, by the implicit reward beta * (log pi - log pi_ref).

    reward(y) = beta * (sum log-prob of y under ``model`` - sum under ``reference``), both through
    the chat template after the pair's prompt. A pair counts as right when reward(chosen) >
    reward(rejected) (ties count as wrong, as in TRL's ``rewards/accuracies``).

    Args:
        model: the policy: a model, a ``PeftModel`` or a ``ModelView``.
        tokenizer: its tokenizer.
        pairs: DPO rows ``{"prompt": [messages], "chosen": [assistant msg], "rejected": [...]}``
            (a plain string is accepted for chosen/rejected).
        reference: ``"base"`` (the policy's ``PeftModel`` with adapters disabled), another model or
            ``ModelView``, or None to compare the policy's plain sequence log-probs.
        beta: scales the margin (not the accuracy).
        batch_size: sequences per forward pass.

    Raises:
        ValueError: no pairs, a malformed pair (all are listed), or ``"base"`` on a model without
            adapters.
    """
    problems = []
    for i, pair in enumerate(pairs):
        for key in ("chosen", "rejected"):
            if _reply_text(pair.get(key)) is None:
                problems.append(f"pair {i}: {key!r} must be one assistant message or a string")
        if not isinstance(pair.get("prompt"), list):
            problems.append(f"pair {i}: 'prompt' must be a list of chat messages")
    if problems:
        raise ValueError("malformed preference pairs:\n" + "\n".join(problems))
    if not pairs:
        raise ValueError("no preference pairs to evaluate")
    policy = _as_view(model)
    if isinstance(reference, str):
        if reference != "base":
            raise ValueError(f"reference must be 'base', a model, a ModelView or None, not {reference!r}")
        reference = ModelView.base(policy.model)
    prompts = [p["prompt"] for p in pairs] * 2
    texts = [_reply_text(p["chosen"]) for p in pairs] + [_reply_text(p["rejected"]) for p in pairs]
    rewards = torch.tensor([s.sum for s in batch_logprobs(policy, tokenizer, prompts, texts, batch_size)])
    if reference is not None:
        rewards -= torch.tensor([s.sum for s in batch_logprobs(reference, tokenizer, prompts, texts, batch_size)])
    margins = beta * (rewards[: len(pairs)] - rewards[len(pairs) :])
    return PairAccuracy(float((margins > 0).float().mean()), float(margins.mean()), len(pairs))


# ----- perplexity -----
@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity over a set of texts.

    Args:
        perplexity: exp(mean_nll).
        mean_nll: total negative log-likelihood / n_tokens, in nats per token.
        n_tokens: tokens predicted (summed over texts).
        n_texts: texts that contributed at least one predicted token.
    """

    perplexity: float
    mean_nll: float
    n_tokens: int
    n_texts: int


def perplexity(
    model: ModelView | Any,
    tokenizer,
    texts: list[str],
    batch_size: int = 8,
    add_bos: bool | None = None,
) -> PerplexityResult:
    """Token-weighted perplexity of plain texts (no chat template): exp(total NLL / total tokens).

    Each text is encoded on its own; every token but the first of the encoded sequence is
    predicted from the tokens before it. With a BOS token in front, that means every token of
    the text is predicted; without one, the text's first token is context only.

    Args:
        model: a model or a ``ModelView``.
        tokenizer: its tokenizer.
        texts: the texts; empty texts (or one-token texts without BOS) contribute nothing.
        batch_size: texts per forward pass.
        add_bos: None encodes as ``tokenizer(text)`` does (SmolLM2 adds no BOS); True puts
            ``tokenizer.bos_token_id`` in front; False adds no special token.

    Raises:
        ValueError: no token to predict, a text longer than the context, or ``add_bos=True``
            with a tokenizer that has no BOS token.
    """
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError("the tokenizer has no BOS token; use add_bos=None or False")
    rows = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=add_bos is None)["input_ids"])
        if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
            ids = [tokenizer.bos_token_id, *ids]
        rows.append(ids)
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise ValueError("the texts hold no token to predict")
    _check_fits(_as_view(model).model, [len(r) for r in rows], "text")
    scores = _score_rows(_as_view(model), rows, [1] * len(rows), _pad_id(tokenizer), batch_size)
    n_tokens = sum(s.numel() for s in scores)
    mean_nll = -float(sum(s.double().sum() for s in scores)) / n_tokens
    return PerplexityResult(math.exp(mean_nll), mean_nll, n_tokens, len(rows))


# ----- KL on sampled answers -----
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
    if not prompts:
        raise ValueError("no prompts to sample from")
    policy, reference = _as_view(policy), _as_view(reference)
    pad_id = _pad_id(tokenizer)
    eos_ids = _eos_ids(policy.model, tokenizer)
    config = _ancestral_config(policy.model, max_new_tokens, eos_ids, pad_id)
    encoded = [
        list(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False))
        for p in prompts
    ]
    _check_fits(policy.model, [len(ids) + max_new_tokens for ids in encoded], "prompt + max_new_tokens")
    rows = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    found: list[KLSample | None] = [None] * len(rows)
    device = _device(policy.model)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in _length_batches([len(ids) for _, ids in rows], batch_size):
            scored = _kl_batch(policy, reference, [rows[r][1] for r in batch], config, eos_ids, pad_id)
            texts = tokenizer.batch_decode([tokens for tokens, _, _ in scored], skip_special_tokens=True)
            for r, (tokens, kl, kl_mc), text in zip(batch, scored, texts):
                found[r] = KLSample(rows[r][0], tokens, text.strip(), kl, kl_mc)
    samples: list[KLSample] = [s for s in found if s is not None]
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
    policy: ModelView, reference: ModelView, prompts: list[list[int]], config, eos_ids: list[int], pad_id: int
) -> list[tuple[list[int], float, float]]:
    """Sample one answer per prompt from the policy; return (tokens, RB estimate, MC estimate) per answer."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for j, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[j, width - len(prompt) :] = torch.tensor(prompt)
        mask[j, width - len(prompt) :] = 1
    device = _device(policy.model)
    with _entered(policy) as model:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
    new = out.sequences[:, width:]  # (B, n); finished rows are padded after their EOS
    n = new.shape[1]
    policy_lp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (B, n, V): what was sampled from
    is_eos = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    no_eos = torch.full_like(new[:, 0], n)
    lengths = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, no_eos)  # EOS counts as a token
    live = torch.arange(n, device=new.device)[None, :] < lengths[:, None]  # (B, n)

    # The reference reads the same left-padded rows in one pass; the last token is never context.
    full_mask = torch.cat([mask.to(new.device), live.long()], dim=1)[:, :-1]
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": n} if _accepts_logits_to_keep(reference.model) else {}
    with _entered(reference) as model:
        ref_device = _device(model)
        ref_logits = model(
            input_ids=out.sequences[:, :-1].to(ref_device),
            attention_mask=full_mask.to(ref_device),
            position_ids=positions.to(ref_device),
            **kwargs,
        ).logits[:, -n:]  # (B, n, V): position t predicts new[:, t]
    ref_lp = torch.log_softmax(ref_logits.float(), dim=-1).to(policy_lp.device)

    probs = policy_lp.exp()
    # 0 * log 0 is 0: a token the policy never samples adds nothing, even where its logit is -inf.
    per_position = torch.where(probs > 0, probs * (policy_lp - ref_lp), torch.zeros_like(probs)).sum(-1)  # (B, n)
    ratio = (policy_lp - ref_lp).gather(-1, new[..., None].to(policy_lp.device)).squeeze(-1)  # (B, n)
    live = live.to(policy_lp.device)
    kl, kl_mc = (per_position * live).sum(1).tolist(), (ratio * live).sum(1).tolist()
    return [(new[j, : lengths[j]].tolist(), kl[j], kl_mc[j]) for j in range(len(prompts))]


def mean_answer_length(texts: Sequence[str], tokenizer=None) -> float:
    """Mean length of answers: in tokens (without special tokens) when a tokenizer is given,
    else in whitespace-separated words. E.g. ``mean_answer_length([s.text for s in kl.samples])``.

    Raises:
        ValueError: no texts.
    """
    if not texts:
        raise ValueError("no answers to measure")
    if tokenizer is None:
        return sum(len(t.split()) for t in texts) / len(texts)
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / len(texts)


@dataclass(frozen=True)
class GreedyAnswer:
    """A greedy answer and its length in tokens (up to, not including, its end of turn)."""

    text: str
    tokens: int


@torch.no_grad()
def greedy_answers(
    model: ModelView | Any, tokenizer, prompts: list[list[Message]], max_new_tokens: int, batch_size: int = 16
) -> list[GreedyAnswer]:
    """Greedy answers to chat prompts, generated in left-padded batches; results in input order."""
    view = _as_view(model)
    side = tokenizer.padding_side
    answers: list[GreedyAnswer] = []
    with _entered(view) as m:
        device = next(m.parameters()).device
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                for p in prompts[start : start + batch_size]
            ]
            tokenizer.padding_side = "left"  # generation continues from the right end of every row
            try:
                inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            finally:
                tokenizer.padding_side = side
            out = m.generate(
                **{k: v.to(device) for k, v in inputs.items()},
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in out[:, inputs["input_ids"].shape[1] :].tolist():
                stops = [i for i, t in enumerate(row) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
                n = stops[0] if stops else len(row)
                answers.append(GreedyAnswer(tokenizer.decode(row[:n], skip_special_tokens=True).strip(), n))
    return answers
