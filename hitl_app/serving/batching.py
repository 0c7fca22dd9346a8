"""Answering several clinicians at once: concurrent questions grouped into one batched ``generate`` call.

Decoding a token on a CPU mostly streams the weights from memory, and one pass over them serves
every row of a batch, so answering eight questions in one call costs far less than eight calls.
Each question asked while the model is busy waits in ``PendingAnswers``; whichever waiting
request next takes the generation lock answers itself and every compatible request waiting
beside it in one call (a leader/follower scheme, so no extra thread and the lock still
serialises generations against swaps). Compatible means the same version, and the same sampling
switches (greedy or sampled, temperature, top-p), which ``generate`` takes once per call.

In the combined call every request's prompt is left-padded to the longest and repeated for its
candidates; each request keeps its own answer length and stop button (``RowLimits``), and its
own streamer receives its rows only (``RowFanOut``). A lone request is answered exactly as
before, so single answers keep the compiled decode shapes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..feedback.records import Sampling
from .generation import Answer, CandidateStreamer, generate_kwargs

# How long the first of several questions asked at the same moment waits for the others to reach
# the queue: a few milliseconds of encoding and request handling apart. A lone answer pays it once.
GATHER_S = 0.02


@dataclass(eq=False)  # compared by identity: two requests are never the same one
class AnswerRequest:
    """One question waiting to be answered: its encoded prompt, settings, and where the answer goes.

    ``version`` is the version asked for, or None for whichever serves when the answer starts.
    """

    inputs: dict[str, torch.Tensor]  # one prompt: input_ids and attention_mask of shape (1, T)
    sampling: Sampling
    k: int
    stop: threading.Event
    streamer: CandidateStreamer | None = None
    on_version: Callable[[str], None] | None = None
    version: str | None = None
    started: float = field(default_factory=time.perf_counter)
    answer: Answer | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's length in tokens, without padding."""
        return int(self.inputs["input_ids"].shape[1])

    def sampling_key(self) -> tuple:
        """What must match for two requests to share one ``generate`` call."""
        s = self.sampling
        return (s.do_sample, s.temperature, s.top_p) if s.do_sample else (False,)

    def finish(self, answer: Answer | None = None, error: BaseException | None = None) -> None:
        """Hand over the answer (or the error) and wake whoever waits for it."""
        self.answer, self.error = answer, error
        self.done.set()

    def result(self) -> Answer:
        """The answer, once ``done`` is set.

        Raises:
            BaseException: whatever generating it raised.
        """
        if self.error is not None:
            raise self.error
        if self.answer is None:
            raise RuntimeError("the answer request was never answered")
        return self.answer


class PendingAnswers:
    """The requests waiting for the generation lock, in arrival order.

    Args:
        max_batch: the most requests answered in one call (``--max-batch``).
    """

    def __init__(self, max_batch: int, gather_s: float = GATHER_S) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 (got {max_batch})")
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiting: list[AnswerRequest] = []

    def add(self, request: AnswerRequest) -> None:
        """Queue a request; it is answered by the next holder of the generation lock that takes it."""
        with self._lock:
            self._waiting.append(request)
            self._arrived.notify_all()

    def take(self, leader: AnswerRequest, serving: str) -> list[AnswerRequest]:
        """The batch ``leader`` answers: itself first, then waiting requests compatible with it.

        Call under the generation lock. Returns [] when ``leader`` was already answered in an
        earlier batch. Each taken request's ``version`` is resolved (None becomes ``serving``).
        With more than one request allowed per batch, requests asked within ``gather_s`` of the
        leader are waited for: questions asked at the same moment reach the queue a few
        milliseconds apart, and the first would otherwise be answered alone.
        """
        with self._lock:
            if leader not in self._waiting:
                return []
            if self.max_batch > 1:
                deadline = leader.started + self.gather_s
                self._arrived.wait_for(
                    lambda: len(self._waiting) >= self.max_batch or time.perf_counter() >= deadline,
                    max(0.0, deadline - time.perf_counter()),
                )
            version = leader.version or serving
            key = leader.sampling_key()
            batch = [leader]
            for request in self._waiting:
                if len(batch) >= self.max_batch:
                    break
                if request is not leader and (request.version or serving) == version and request.sampling_key() == key:
                    batch.append(request)
            for request in batch:
                request.version = version
                self._waiting.remove(request)
        return batch

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)


class RowLimits:
    """A transformers StoppingCriteria ending each row at its request's stop button or answer length.

    Args:
        prompt_len: the padded prompt length; new tokens start after it.
        limits: per row, the most new tokens its request asked for.
        stops: per row, its request's stop event.
    """

    def __init__(self, prompt_len: int, limits: Sequence[int], stops: Sequence[threading.Event]) -> None:
        self.prompt_len = prompt_len
        self.limits = torch.tensor(list(limits))
        self.stops = list(stops)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        made = input_ids.shape[1] - self.prompt_len
        stopped = torch.tensor([event.is_set() for event in self.stops])
        return ((self.limits <= made) | stopped).to(input_ids.device)


class RowFanOut:
    """A transformers streamer that hands each request's rows of a batched call to its own streamer.

    Args:
        parts: per request, its streamer (or None) and the slice of rows it owns.
    """

    def __init__(self, parts: Sequence[tuple[CandidateStreamer | None, slice]]) -> None:
        self.parts = [(streamer, rows) for streamer, rows in parts if streamer is not None]

    def put(self, value: torch.Tensor) -> None:
        """Pass the prompt (a (R, T) tensor) or one step's tokens (R,) on, row slice by row slice."""
        for streamer, rows in self.parts:
            streamer.put(value[rows])

    def end(self) -> None:
        """Nothing to do: each request's own streamer is ended by whoever started it."""


def batched_inputs(batch: Sequence[AnswerRequest], pad_token_id: int) -> tuple[dict[str, torch.Tensor], list[slice]]:
    """Every request's prompt, left-padded to the longest and repeated ``k`` times, and each one's rows.

    Left padding keeps every prompt's last token in the last column, where decoding continues.
    """
    width = max(r.prompt_tokens for r in batch)
    ids, masks, slices, row = [], [], [], 0
    for request in batch:
        prompt = request.inputs["input_ids"][0]
        mask = request.inputs.get("attention_mask", torch.ones_like(request.inputs["input_ids"]))[0]
        pad = width - prompt.shape[0]
        ids.append(torch.cat([prompt.new_full((pad,), pad_token_id), prompt]).repeat(request.k, 1))
        masks.append(torch.cat([mask.new_zeros(pad), mask]).repeat(request.k, 1))
        slices.append(slice(row, row + request.k))
        row += request.k
    return {"input_ids": torch.cat(ids), "attention_mask": torch.cat(masks)}, slices


def batch_kwargs(batch: Sequence[AnswerRequest], device: torch.device, pad_token_id: int) -> tuple[dict, list[slice]]:
    """``generate``'s arguments for answering ``batch`` in one call, and each request's rows.

    A lone request gets exactly its single-answer arguments (``num_return_sequences`` = its
    candidates), so compiled decode shapes apply; several get their prompts padded together
    (``batched_inputs``), per-row answer lengths and stop buttons, and a streamer per request.
    """
    from transformers import StoppingCriteriaList

    if len(batch) == 1:
        r = batch[0]
        return generate_kwargs(r.inputs, r.sampling, r.k, r.stop, device, pad_token_id, r.streamer), [slice(0, r.k)]
    inputs, slices = batched_inputs(batch, pad_token_id)
    streams = RowFanOut([(r.streamer, rows) for r, rows in zip(batch, slices)])
    kwargs = generate_kwargs(inputs, batch[0].sampling, 1, batch[0].stop, device, pad_token_id, streams)
    limits = [r.sampling.max_new_tokens for r in batch for _ in range(r.k)]
    stops = [r.stop for r in batch for _ in range(r.k)]
    kwargs.update(
        max_new_tokens=max(limits),
        stopping_criteria=StoppingCriteriaList([RowLimits(inputs["input_ids"].shape[1], limits, stops)]),
    )
    return kwargs, slices


def split_answers(
    out: torch.Tensor, batch: Sequence[AnswerRequest], slices: Sequence[slice], prompt_len: int, tokenizer
) -> list[Answer]:
    """Each request's ``Answer`` from the rows of one batched call.

    Args:
        out: the (rows, prompt_len + new) token ids ``generate`` returned.
        batch: the requests, in row order.
        slices: each request's rows.
        prompt_len: the padded prompt length.
        tokenizer: decodes the new tokens; its padding is not counted.
    """
    answers = []
    for request, rows in zip(batch, slices):
        new = out[rows, prompt_len : prompt_len + request.sampling.max_new_tokens]
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        answers.append(
            Answer(
                candidates=texts,
                version=request.version or "",
                sampling=request.sampling,
                prompt_tokens=request.prompt_tokens,
                new_tokens=int((new != tokenizer.pad_token_id).sum().item()),
                seconds=time.perf_counter() - request.started,
            )
        )
    return answers
