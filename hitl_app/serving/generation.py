"""Generating answers: the prompt through the chat template, ``generate``'s arguments, and the
results of one batched call, whole (``Answer``) or streamed (``StreamUpdate``).

These pieces know the tokenizer and ``generate`` but not which weights answer, nor the generation
lock: ``ModelManager`` runs them under the lock with the version's weights in place.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..core.chat import Message
from ..core.errors import UserError
from ..feedback.records import Sampling


@dataclass(frozen=True)
class Answer:
    """Candidate answers from one generate call, with the version and settings that made them."""

    candidates: list[str]
    version: str
    sampling: Sampling
    prompt_tokens: int
    new_tokens: int
    seconds: float


@dataclass(frozen=True)
class StreamUpdate:
    """Text so far of each streamed candidate; ``answer`` is set on the last update only."""

    texts: list[str]
    version: str
    answer: Answer | None = None

    @property
    def text(self) -> str:
        """The first (or only) candidate's text so far."""
        return self.texts[0]


class _StopOnEvent:
    """A transformers StoppingCriteria that ends generation when the reader goes away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


_END = object()


class CandidateStreamer:
    """A transformers streamer for a batch of candidates sampled in one ``generate`` call.

    ``generate`` first puts the (expanded) prompt as a (K, T) tensor, then one (K,) tensor of new
    tokens per step; finished rows receive padding, which decoding skips. Each step queues a
    snapshot of all K texts, and the reader takes only the newest snapshot, so a slow reader
    never falls behind generation. (transformers' TextIteratorStreamer handles batch size 1 only.)

    Args:
        tokenizer: decodes the new tokens.
        k: how many candidates the batch holds.
        timeout_s: how long the reader waits for the next step before giving up.
    """

    def __init__(self, tokenizer, k: int, timeout_s: float = 600.0) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in range(k)]
        self.timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        """Receive the prompt (skipped) or one step's new tokens."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for row, token in zip(self.tokens, value.reshape(len(self.tokens), -1).tolist()):
            row.extend(token)
        texts = self.tokenizer.batch_decode(self.tokens, skip_special_tokens=True)
        # A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
        self._queue.put([t[:-1] if t.endswith("\ufffd") else t for t in texts])

    def end(self) -> None:
        """Mark the end of generation (also called when generation fails)."""
        self._queue.put(_END)

    def __iter__(self) -> Iterator[list[str]]:
        while True:
            item = self._queue.get(timeout=self.timeout_s)
            while item is not _END:  # skip to the newest snapshot
                try:
                    newer = self._queue.get_nowait()
                except queue.Empty:
                    break
                if newer is _END:
                    yield item
                    return
                item = newer
            if item is _END:
                return
            yield item


def encode_messages(tokenizer, messages: list[Message], context_length: int, max_new_tokens: int) -> dict[str, torch.Tensor]:
    """Tokenise chat messages through the tokenizer's chat template, checking they leave room for the answer.

    Args:
        tokenizer: the served model's tokenizer.
        messages: the system prompt (if any) and the user's turn; the last user turn must not be blank.
        context_length: the model's context, in tokens.
        max_new_tokens: the tokens kept free for the answer.

    Raises:
        UserError: the question is empty, or too long for the model's context.
    """
    question = messages[-1]["content"] if messages else ""
    if not question or not question.strip():
        raise UserError("the question is empty")
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    n = int(inputs["input_ids"].shape[1])
    room = context_length - max_new_tokens
    if n > room:
        raise UserError(
            f"the question is {n} tokens long; this model reads at most {room} "
            f"({context_length} tokens of context, {max_new_tokens} kept for the answer)"
        )
    return inputs


def generate_kwargs(
    inputs: dict[str, torch.Tensor],
    sampling: Sampling,
    k: int,
    stop: threading.Event,
    device: torch.device,
    pad_token_id: int | None,
    streamer: CandidateStreamer | None = None,
) -> dict:
    """The keyword arguments of one ``generate`` call sampling ``k`` candidates for one prompt.

    Args:
        inputs: the encoded prompt (``encode_messages``).
        sampling: the decoding settings.
        k: candidates to sample together (``num_return_sequences``).
        stop: when set, generation ends at the next step.
        device: the model's device; the inputs are moved there.
        pad_token_id: padding for rows that finished early.
        streamer: receives each step's tokens, or None.
    """
    from transformers import StoppingCriteriaList

    kwargs = {key: value.to(device) for key, value in inputs.items()}
    kwargs.update(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.do_sample,
        num_return_sequences=k,
        pad_token_id=pad_token_id,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
        streamer=streamer,
    )
    if sampling.do_sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
    return kwargs


@dataclass
class _Outcome:
    version: str | None = None  # set under the lock, before the first token
    answer: Answer | None = None
    error: BaseException | None = None


def stream_answer(
    run: Callable[[threading.Event, CandidateStreamer, Callable[[str], None]], Answer],
    tokenizer,
    k: int,
    serving: Callable[[], str],
) -> Iterator[StreamUpdate]:
    """Run one batched generation in its own thread and yield its candidates' text as it grows.

    If the reader stops early, the stop event ends generation, and this waits for the thread (and
    so for the generation lock it holds) before returning.

    Args:
        run: generates the answer; called as ``run(stop, streamer, on_version)`` in the worker
            thread, it calls ``on_version`` with the version answering before the first token.
        tokenizer: decodes the streamed tokens.
        k: candidates in the batch.
        serving: the version serving now, for an update made before ``on_version`` was called.

    Raises:
        Exception: whatever ``run`` raised, in the reader's thread.
    """
    streamer = CandidateStreamer(tokenizer, k)
    stop = threading.Event()
    outcome = _Outcome()

    def on_version(version: str) -> None:
        outcome.version = version

    def produce() -> None:
        try:
            outcome.answer = run(stop, streamer, on_version)
        except BaseException as exc:  # re-raised in the reader's thread below
            outcome.error = exc
        finally:
            streamer.end()

    worker = threading.Thread(target=produce, name="generate", daemon=True)
    worker.start()
    try:
        for texts in streamer:
            yield StreamUpdate(texts=texts, version=outcome.version or serving())
    finally:
        stop.set()
        worker.join()
    if outcome.error is not None:
        raise outcome.error
    answer = outcome.answer
    yield StreamUpdate(texts=list(answer.candidates), version=answer.version, answer=answer)
