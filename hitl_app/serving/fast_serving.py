"""Answering on the fast path: when the merged serving copy answers, and starting its compiled decoding.

The PEFT model is the source of truth for versions. Before each answer, under the generation lock
and with the answering version's weights active in the PEFT model, the merged copy
(``fastpath.MergedServingCopy``) is made to hold that version, re-merging only when it holds
another; a version the copy cannot hold is answered by the PEFT model. Compiled decoding
(``compiled_decode.py``) is warmed up on a shipped evaluation question, encoded as answers are.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from .fastpath import FastPathUnsupported, MergedServingCopy

log = logging.getLogger(__name__)


def generate_answer(peft_model, fast: MergedServingCopy | None, version: str, kwargs: dict) -> torch.Tensor:
    """``generate`` on the merged copy if it can hold ``version``, else on the PEFT model.

    Call under the generation lock, with ``version``'s weights active in ``peft_model``.

    Args:
        peft_model: the PEFT model, set up as it answers ``version``.
        fast: the merged serving copy, or None to answer on ``peft_model``.
        version: the version answering.
        kwargs: ``generate``'s keyword arguments.
    """
    if fast is not None and _holds(fast, peft_model, version):
        return fast.generate(**kwargs)
    return peft_model.generate(**kwargs)


def _holds(fast: MergedServingCopy, peft_model, version: str) -> bool:
    # Whether the copy now holds ``version``; ``prepare`` logs why it cannot, once per version.
    try:
        fast.prepare(peft_model, version)
    except FastPathUnsupported:
        return False
    return True


def warm_up_question() -> str:
    """The question compiled decoding warms up on: the first shipped evaluation question."""
    from ..evaluation.evalsets import load_eval_questions

    return load_eval_questions()[0].question


def start_compiled_decoding(
    fast: MergedServingCopy | None,
    example: Callable[[], dict],
    max_new_tokens: int,
    context_length: int,
    buckets: Sequence[int] | None = None,
    rows: Sequence[int] = (1,),
) -> bool:
    """Compile the copy's decoding in the background; False (doing nothing) when there is nothing to compile.

    Args:
        fast: the merged serving copy; None (e.g. ``--serve-dtype float32``, or CUDA) compiles nothing.
        example: builds the ``generate`` arguments of one real single-prompt answer, so the
            compiled graphs fit the answers to come; called only when compiling starts.
        max_new_tokens: the answer length the default buckets must hold.
        context_length: the model's context, which caps the default buckets.
        buckets: the static cache lengths to compile, in order (default:
            ``compiled_decode.default_buckets``).
        rows: the numbers of candidates sampled together to compile for (1: single answers).
    """
    if fast is None:
        return False
    from .compiled_decode import default_buckets

    if buckets is None:
        buckets = default_buckets(max_new_tokens, context_length)
    if not buckets:
        log.info("compiled decoding is off: %d-token answers need a longer cache than it keeps", max_new_tokens)
        return False
    decoder = fast.compile_decoding(buckets, rows)
    decoder.start(example())
    return True
