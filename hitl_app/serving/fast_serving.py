"""Answering on the fast path: when the merged serving copy answers, and starting its compiled decoding.

The PEFT model is the source of truth for versions. Before each answer, under the generation lock
and with the answering version's weights active in the PEFT model, the merged copy
(``fastpath.MergedServingCopy``) is made to hold that version, re-merging only when it holds
another; a version the copy cannot hold is answered by the PEFT model. Compiled decoding
(``compiled_decode.py``) is warmed up on a shipped evaluation question, encoded as answers are,
for the shapes in use, compiled cold in a low-priority process (``precompile.py``).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Callable, Sequence

import torch

from ..core.chat import chat_prompt
from ..feedback.records import Sampling
from .activity import AnswerActivity
from .fastpath import FastPathUnsupported, MergedServingCopy
from .generation import encode_messages, generate_kwargs
from .precompile import PrecompileSpec, precompile_shape

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


def example_kwargs(
    tokenizer, question: str, system_prompt: str | None, sampling: Sampling, context_length: int, stop: threading.Event
) -> dict:
    """``generate``'s arguments for one real single-prompt answer, built as answers are built.

    Compiling on them gives graphs whose guards hold for the answers to come; the serving process
    and the low-priority compile process (``precompile.py``) both build them here, so both
    compile the same graphs and share the disk cache.
    """
    inputs = encode_messages(tokenizer, chat_prompt(question, system_prompt), context_length, sampling.max_new_tokens)
    return generate_kwargs(inputs, sampling, 1, stop, torch.device("cpu"), tokenizer.pad_token_id)


def start_compiled_decoding(
    fast: MergedServingCopy | None,
    example: Callable[[], dict],
    max_new_tokens: int,
    context_length: int,
    buckets: Sequence[int] | None = None,
    rows: Sequence[int] = (1,),
    shapes: Sequence[tuple[int, int]] | None = None,
    activity: AnswerActivity | None = None,
    precompile: PrecompileSpec | None = None,
) -> bool:
    """Compile the copy's decoding in the background; False (doing nothing) when there is nothing to compile.

    Args:
        fast: the merged serving copy; None (e.g. ``--serve-dtype float32``, or CUDA) compiles nothing.
        example: builds the ``generate`` arguments of one real single-prompt answer, so the
            compiled graphs fit the answers to come; called only when compiling starts.
        max_new_tokens: the answer length the default buckets must hold.
        context_length: the model's context, which caps the default buckets.
        buckets: the static cache lengths that may be compiled (default:
            ``compiled_decode.default_buckets``).
        rows: the numbers of candidates sampled together that may be compiled (1: single answers).
        shapes: the (bucket, rows) shapes to compile at once (default: every bucket x rows); others
            are compiled when an answer first asks for them.
        activity: answers in flight; compiling in this process gives way to them.
        precompile: compile each shape cold in a low-priority child process from this spec first
            (``precompile.py``); None compiles in this process only.
    """
    if fast is None:
        return False
    from .compiled_decode import default_buckets

    if buckets is None:
        buckets = default_buckets(max_new_tokens, context_length)
    if not buckets:
        log.info("compiled decoding is off: %d-token answers need a longer cache than it keeps", max_new_tokens)
        return False
    background = None if precompile is None else functools.partial(precompile_shape, precompile)
    decoder = fast.compile_decoding(buckets, rows, activity, background)
    decoder.start(example(), shapes)
    return True
