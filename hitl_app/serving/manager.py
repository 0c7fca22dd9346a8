"""ModelManager: answers from one base model, with LoRA versions hot-swapped between answers.

The base is loaded once and wrapped in a PEFT model with one adapter slot. The manager owns the
generation lock and puts together the parts that each do one job:

- ``swap.py``: which version the slot holds; a new version is read from disk off the request path
  and copied into the slot in place (``peft.utils.hotswap``); versions answering A/B comparisons
  sit beside the slot; a background thread follows the registry's ACTIVE pointer.
- ``generation.py``: the prompt through the chat template, ``generate``'s arguments, one batched
  call for K candidates, whole (``Answer``) or streamed (``StreamUpdate``).
- ``fast_serving.py``: on CPU the tokens may come from a faster merged copy of the base
  (``fastpath.py``, ``--serve-dtype``), re-merged from the PEFT model whenever the version to
  answer changes, and decoding compiled in the background (``compiled_decode.py``).
- ``threads.py``: how many CPU threads the next answer may use.

Every generation holds the lock from its first token to its last, and a swap takes the same lock,
so an answer is never produced half by one version and half by another. The answering version is
read under the lock, so every answer is tagged with the version that wrote it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

from ..core.chat import Message, chat_prompt
from ..feedback.records import Sampling
from ..versions.registry import Registry
from . import fast_serving
from .fastpath import MergedServingCopy
from .activity import AnswerActivity
from .batching import AnswerRequest, PendingAnswers, batch_kwargs, split_answers
from .generation import (
    Answer,
    CandidateStreamer,
    StreamUpdate,
    encode_messages,
    generate_kwargs,
    stream_answer,
)
from .precompile import PrecompileSpec
from .swap import SLOT, ActiveWatcher, AdapterSlot
from .threads import apply_threads

if TYPE_CHECKING:
    from ..evaluation.judge_cache import JudgeCache

__all__ = ["Answer", "CandidateStreamer", "ModelManager", "StreamUpdate"]

log = logging.getLogger(__name__)


class ModelManager:
    """Generation and version swapping on one shared model, serialised by one generation lock.

    Args:
        model: a ``PeftModel`` wrapping the base, with an adapter named ``default``.
        tokenizer: its tokenizer (left padding, chat template).
        registry: where versions are published and the ACTIVE pointer lives.
        sampling: default decoding settings.
        system_prompt: the system message put before every question (None for none).
        fast: a merged serving copy (``hitl_app.serving.fastpath``) to generate with, or None to generate
            with ``model``. ``model`` stays the source of truth for versions either way.
        max_batch: the most concurrent questions answered together in one batched call (``batching.py``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        registry: Registry,
        sampling: Sampling,
        system_prompt: str | None,
        fast=None,
        max_batch: int = 8,
        judges: JudgeCache | None = None,
    ) -> None:
        self.model = model
        self.fast: MergedServingCopy | None = fast
        self.tokenizer = tokenizer
        self.registry = registry
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.threads_policy: Callable[[], int] | None = None  # CPU threads for the next answer
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.slot = AdapterSlot(model, registry)
        self._lock = threading.Lock()  # held by each generation, swap and judge check, start to end
        self.pending = PendingAnswers(max_batch)  # questions waiting for the lock, answered together
        self.activity = AnswerActivity()  # answers in flight, which background work gives way to
        self._watcher = ActiveWatcher(self.sync, lambda: self.version)
        self.judges = judges  # where the clinical-text judge's calibration is kept, or None: calibrate here
        self._judge = None  # the clinical-text judge, read or calibrated at the first check

    @classmethod
    def wrap(
        cls,
        base_model,
        tokenizer,
        registry: Registry,
        sampling: Sampling,
        system_prompt: str | None,
        lora_config,
        serve_dtype: torch.dtype | None = None,
        max_batch: int = 8,
        judges: JudgeCache | None = None,
    ):
        """Wrap a loaded base model with an identity LoRA slot (B = 0) and serve ACTIVE's version.

        With ``serve_dtype`` (see ``fastpath.resolve_serve_dtype``) answers come from a merged copy
        of the base in that dtype; the PEFT model still holds every version. ``max_batch`` is the
        most concurrent questions answered in one call. ``judges`` keeps the clinical-text judge's
        calibration, which the trainer usually has written already (``judge_cache``).
        """
        from peft import get_peft_model

        from .fastpath import build_serving_copy

        fast = build_serving_copy(base_model, serve_dtype)  # before get_peft_model changes the base in place
        model = get_peft_model(base_model, lora_config, adapter_name=SLOT)
        model.eval()
        manager = cls(model, tokenizer, registry, sampling, system_prompt, fast=fast, max_batch=max_batch, judges=judges)
        manager.sync()
        return manager

    # ----- versions -----
    @property
    def version(self) -> str:
        """The version answering now."""
        return self.slot.version

    def sync(self) -> bool:
        """Serve whatever ACTIVE names, if that is not already served. Returns whether it swapped."""
        target = self.registry.active().version
        if target == self.version:
            return False
        self.activate(target)
        return True

    def activate(self, version: str) -> float:
        """Swap ``version`` in between two generations; returns the seconds the swap held the lock.

        Raises:
            NotFoundError: the version is not published.
        """
        prepared = self.slot.prepare(version)  # file I/O, outside the lock
        started = time.perf_counter()
        with self._lock:
            self.slot.apply(version, prepared)
        held = time.perf_counter() - started
        log.info("now serving %s (swap held the lock %.1f ms)", version, held * 1e3)
        return held

    def watch(self, interval_s: float = 0.05) -> None:
        """Follow the ACTIVE pointer in a background thread, so new versions are served promptly."""
        self._watcher.start(interval_s)

    def close(self) -> None:
        """Stop following ACTIVE."""
        self._watcher.stop()

    # ----- generation -----
    def messages(self, prompt: str) -> list[Message]:
        """The chat messages for a question: the system prompt (if any) and the user's turn."""
        return chat_prompt(prompt, self.system_prompt)

    def encode(self, prompt: str, sampling: Sampling | None = None) -> dict[str, torch.Tensor]:
        """Tokenise a question through the chat template, checking that it fits the context.

        Raises:
            UserError: the prompt is empty, or too long for the model's context.
        """
        sampling = sampling or self.sampling
        return encode_messages(self.tokenizer, self.messages(prompt), self.context_length, sampling.max_new_tokens)

    def _generate_kwargs(
        self, inputs, sampling: Sampling, k: int, stop: threading.Event, streamer: CandidateStreamer | None = None
    ) -> dict:
        device = next(self.model.parameters()).device
        return generate_kwargs(inputs, sampling, k, stop, device, self.tokenizer.pad_token_id, streamer)

    def _run(
        self,
        inputs,
        sampling: Sampling,
        k: int,
        stop: threading.Event,
        streamer: CandidateStreamer | None = None,
        on_version: Callable[[str], None] | None = None,
        version: str | None = None,
    ) -> Answer:
        # Queue the request, then take the lock; whoever holds it answers every compatible request
        # waiting beside it in one call (``batching.py``), so a request may be answered by another
        # thread's call before this one gets the lock.
        request = AnswerRequest(inputs, sampling, k, stop, streamer, on_version, version)
        self.pending.add(request)
        with self._lock:
            batch = self.pending.take(request, self.version)
            if batch:
                self._answer(batch)
        return request.result()

    def _answer(self, batch: list[AnswerRequest]) -> None:
        # Under the lock: the answering version's weights are set up under the lock a swap also takes.
        try:
            version = batch[0].version
            for request in batch:
                if request.on_version is not None:
                    request.on_version(version)  # stream()'s updates carry the version writing them
            apply_threads(self.threads_policy)
            device = next(self.model.parameters()).device
            kwargs, slices = batch_kwargs(batch, device, self.tokenizer.pad_token_id)
            with self.activity.answering(), torch.inference_mode(), self.slot.weights_for(version):
                out = fast_serving.generate_answer(self.model, self.fast, version, kwargs)
            answers = split_answers(out, batch, slices, kwargs["input_ids"].shape[1], self.tokenizer)
        except BaseException as exc:  # every request of the batch fails with it, each in its own thread
            for request in batch:
                request.finish(error=exc)
            return
        for request, answer in zip(batch, answers):
            request.finish(answer)

    def generate(self, prompt: str, k: int = 1, sampling: Sampling | None = None, version: str | None = None) -> Answer:
        """Answer a question with ``k`` candidates sampled in one batched ``generate`` call.

        ``version`` answers with another published version (or ``base``) than the serving one,
        for comparisons; serving is unaffected.

        Raises:
            UserError: the prompt is empty or too long.
            NotFoundError: ``version`` is not published.
        """
        sampling = sampling or self.sampling
        inputs = self.encode(prompt, sampling)
        return self._run(inputs, sampling, k, threading.Event(), version=version)

    def stream(self, prompt: str, k: int = 1, sampling: Sampling | None = None) -> Iterator[StreamUpdate]:
        """Stream ``k`` candidates sampled in one batched call; the last update carries the ``Answer``.

        Generation runs in its own thread, which holds the model lock for the whole batch. If
        the reader stops early, generation is stopped before the lock is released.

        Raises:
            UserError: the prompt is empty or too long (before anything is generated).
        """
        sampling = sampling or self.sampling
        inputs = self.encode(prompt, sampling)

        def run(stop: threading.Event, streamer: CandidateStreamer, on_version: Callable[[str], None]) -> Answer:
            return self._run(inputs, sampling, k, stop, streamer, on_version)

        yield from stream_answer(run, self.tokenizer, k, lambda: self.version)

    # ----- the fast path -----
    def start_compiled_decoding(
        self,
        buckets: Sequence[int] | None = None,
        rows: Sequence[int] = (1,),
        question: str | None = None,
        shapes: Sequence[tuple[int, int]] | None = None,
        precompile_from: str | None = None,
    ) -> bool:
        """Compile the fast copy's decoding in the background (``compiled_decode.py``).

        The warm-up decodes a real question through the same arguments as an answer, so the
        compiled graphs fit the answers to come. Compiling in this process gives way to answers.
        Returns False (and does nothing) when there is no fast copy to compile, e.g. with
        ``--serve-dtype float32`` or on CUDA.

        Args:
            buckets: the static cache lengths that may be compiled (default: from the answer
                length and the model's context, ``compiled_decode.default_buckets``).
            rows: the numbers of candidates sampled together that may be compiled (1: single answers).
            question: the warm-up question (default: ``fast_serving.warm_up_question``).
            shapes: the (bucket, rows) shapes to compile at once (default: every bucket x rows);
                the others are compiled when an answer first needs them.
            precompile_from: the base model's folder or hub id: compile each shape cold in a
                low-priority child process first (``precompile.py``); None compiles here only.
        """
        question = question or fast_serving.warm_up_question()

        def example() -> dict:
            return fast_serving.example_kwargs(
                self.tokenizer, question, self.system_prompt, self.sampling, self.context_length, threading.Event()
            )

        spec = None
        if precompile_from is not None and self.fast is not None:
            spec = PrecompileSpec(
                base=precompile_from,
                dtype=str(self.fast.dtype).removeprefix("torch."),
                system_prompt=self.system_prompt,
                sampling=self.sampling,
                question=question,
            )
        return fast_serving.start_compiled_decoding(
            self.fast, example, self.sampling.max_new_tokens, self.context_length, buckets, rows, shapes,
            self.activity, spec,
        )

    # ----- judging text with the base model -----
    def clinical_text_nll(self, prompt: str, text: str):
        """How the base model reads ``text`` as the answer to ``prompt``: (NLL per token, the judge).

        Runs under the generation lock with the adapter disabled, between two answers. The judge
        comes from ``judges`` when the trainer (or an earlier start) has calibrated it; otherwise it
        is calibrated here on the shipped reference answers the first time (seconds, under the
        lock, once).
        """
        from ..evaluation.clinical_text import ClinicalTextJudge, reply_nll
        from ..evaluation.model_view import ModelView

        if self._judge is None and self.judges is not None:
            self._judge = self.judges.read()  # a file read: before the lock, so answers never wait for it
        base = ModelView.base(self.model)
        with self._lock, torch.inference_mode():
            if self._judge is None:
                self._judge = (
                    self.judges.judge(base, self.tokenizer)
                    if self.judges is not None
                    else ClinicalTextJudge.calibrate(base, self.tokenizer, self.system_prompt)
                )
            nll = reply_nll(base, self.tokenizer, [self.messages(prompt)], [text])[0]
        return nll, self._judge
