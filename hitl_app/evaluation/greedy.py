"""Greedy answers of a version to fixed questions, and their mean length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..core.chat import Message
from .model_view import ModelView, as_view, entered


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
    view = as_view(model)
    side = tokenizer.padding_side
    answers: list[GreedyAnswer] = []
    with entered(view) as m:
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
