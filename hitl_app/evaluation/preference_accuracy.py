"""Held-out preference accuracy: how often a version's implicit DPO reward prefers the answer
clinicians preferred, and by what margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from .logprobs import batch_logprobs
from .model_view import ModelView, as_view


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


def check_pairs(pairs: list[dict]) -> None:
    """Raise ``ValueError`` listing every malformed DPO row (a prompt of chat messages, and a chosen
    and a rejected answer, each one assistant message or a string)."""
    problems = []
    for i, pair in enumerate(pairs):
        for key in ("chosen", "rejected"):
            if _reply_text(pair.get(key)) is None:
                problems.append(f"pair {i}: {key!r} must be one assistant message or a string")
        if not isinstance(pair.get("prompt"), list):
            problems.append(f"pair {i}: 'prompt' must be a list of chat messages")
    if problems:
        raise ValueError("malformed preference pairs:\n" + "\n".join(problems))


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
    check_pairs(pairs)
    if not pairs:
        raise ValueError("no preference pairs to evaluate")
    policy = as_view(model)
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
