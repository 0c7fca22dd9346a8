"""Log-probabilities of fixed texts: completions after chat prompts, and perplexity of plain texts.

A completion is rendered as the prompt with the generation prompt, then prompt + assistant
message; the tokens after the prompt are scored, including the template's end-of-turn tokens.
Every function runs batched forward passes under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from ..core.chat import Message
from .model_view import ModelView, accepts_logits_to_keep, as_view, context_length, device_of, entered, pad_token_id


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


def render_reply(tokenizer, prompt: list[Message], completion: str) -> tuple[list[int], int]:
    """Token ids of prompt + reply and where the reply starts."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=False
    )
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not extend the prompt with the reply; cannot score it")
    return list(full_ids), len(prompt_ids)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of ``batch_size``, longest rows first."""
    # Longest first, so each batch holds rows of similar length and little padding.
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded batch: (input ids, attention mask), each a long tensor."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(row)
        mask[j, : len(row)] = 1
    return ids, mask


def check_fits(model, lengths: Sequence[int], what: str) -> None:
    """Raise ``ValueError`` naming every row longer than the model's context."""
    limit = context_length(model)
    too_long = [f"{what} {i} ({n} tokens)" for i, n in enumerate(lengths) if limit is not None and n > limit]
    if too_long:
        raise ValueError(f"longer than the model's context of {limit} tokens: {', '.join(too_long)}; shorten them")


@torch.no_grad()
def score_rows(
    view: ModelView, rows: list[list[int]], starts: list[int], pad_id: int, batch_size: int
) -> list[torch.Tensor]:
    """Log-prob of every token ``rows[i][starts[i]:]`` given the tokens before it (starts >= 1).

    Rows are right-padded, so each real token sits at the position it has alone, and the causal
    mask keeps padding (always after the real tokens) out of their context. Logits are computed
    only from the first position that predicts a scored token on (``logits_to_keep``), not for
    the prompts before it.
    """
    out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    with entered(view) as model:
        device = device_of(model)
        trim = accepts_logits_to_keep(model)
        for batch in length_batches([len(r) for r in rows], batch_size):
            ids, mask = right_padded([rows[i] for i in batch], pad_id)
            width = ids.shape[1]
            first = min(starts[i] for i in batch) - 1 if trim else 0  # the first position whose logits are read
            kwargs = {"logits_to_keep": width - first} if trim else {}
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits  # (B, T - first, V)
            for j, i in enumerate(batch):
                start, end = starts[i] - first, len(rows[i]) - first
                row_logits = logits[j, start - 1 : end - 1].float()  # position t predicts token t+1
                targets = ids[j, starts[i] : len(rows[i])].to(row_logits.device)
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
    rendered = [render_reply(tokenizer, p, c) for p, c in zip(prompts, completions)]
    rows = [ids for ids, _ in rendered]
    limit = context_length(as_view(model).model)
    if truncate and limit is not None:
        check_fits(as_view(model).model, [start + 1 for _, start in rendered], "prompt")
        rows = [r[:limit] for r in rows]
    check_fits(as_view(model).model, [len(r) for r in rows], "sequence")
    scores = score_rows(as_view(model), rows, [s for _, s in rendered], pad_token_id(tokenizer), batch_size)
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
    check_fits(as_view(model).model, [len(r) for r in rows], "text")
    scores = score_rows(as_view(model), rows, [1] * len(rows), pad_token_id(tokenizer), batch_size)
    n_tokens = sum(s.numel() for s in scores)
    mean_nll = -float(sum(s.double().sum() for s in scores)) / n_tokens
    return PerplexityResult(math.exp(mean_nll), mean_nll, n_tokens, len(rows))
