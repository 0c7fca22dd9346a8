"""Whether a text reads as clinical text, as the base model judges it.

The measure is the base model's mean negative log-likelihood per token of the text as the
assistant's reply to its question (nats per token). The yardstick is the shipped reference
answers (``data/eval_questions.jsonl``), scored the same way: a text more than ``MARGIN_NATS``
above their 95th percentile is ``e ** MARGIN_NATS`` times less likely per token than almost every
reference answer, which word salad or random characters are and a terse but real clinical answer
is not. The base model judges because it stands outside every round: no clinician's edits have
moved it.

The same judge flags an edit before it is saved and, in the promotion gate, counts the answers of
a new version that no longer read as clinical text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..core.chat import Message, chat_prompt
from .model_view import ModelView
from .logprobs import batch_logprobs
from .evalsets import load_eval_questions


MARGIN_NATS = 1.0
REFERENCE_QUANTILE = 0.95


def reply_nll(
    base: ModelView | Any, tokenizer, prompts: Sequence[list[Message]], texts: Sequence[str], batch_size: int = 8
) -> list[float]:
    """The mean negative log-likelihood per token of each text as the reply to its prompt, under ``base``.

    A reply longer than the model's context is judged on its leading part that fits.
    """
    scores = batch_logprobs(base, tokenizer, list(prompts), list(texts), batch_size, truncate=True)
    return [-s.mean for s in scores]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class ClinicalTextJudge:
    """The threshold above which a reply does not read as clinical text.

    Args:
        reference_nll: the 95th percentile of the shipped reference answers' NLL per token.
        threshold: ``reference_nll + MARGIN_NATS``.
    """

    reference_nll: float
    threshold: float

    @classmethod
    def calibrate(cls, base: ModelView | Any, tokenizer, system_prompt: str | None) -> "ClinicalTextJudge":
        """Score the shipped reference answers under ``base`` and set the threshold from them."""
        questions = load_eval_questions()
        nll = reply_nll(base, tokenizer, [chat_prompt(q.question, system_prompt) for q in questions],
                        [q.reference for q in questions])
        return cls.from_reference_nll(nll)

    @classmethod
    def from_reference_nll(cls, nll: Sequence[float]) -> "ClinicalTextJudge":
        """The judge from the shipped reference answers' NLL per token, however they were scored."""
        reference = _quantile(nll, REFERENCE_QUANTILE)
        return cls(reference_nll=reference, threshold=reference + MARGIN_NATS)

    def reads_as_clinical(self, nll: float) -> bool:
        """Whether a reply with this NLL per token reads as clinical text."""
        return nll <= self.threshold

    def describe(self, nll: float) -> str:
        """One line for a reviewer on a reply that does not read as clinical text."""
        return (
            f"this does not read as clinical text: the base model finds it {math.exp(nll - self.reference_nll):.0f}x "
            f"less likely per word-piece than the reference answers ({nll:.2f} against at most {self.threshold:.2f} "
            "nats per token); check it for pasted or garbled text"
        )
