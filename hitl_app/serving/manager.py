"""ModelManager: serves answers from one base model and hot-swaps LoRA versions between answers.

The base is loaded once and wrapped in a PEFT model with one adapter slot. Serving ``base`` runs
with the adapter disabled; serving ``vNNNN`` means that version's weights sit in the slot. A new
version is read from disk off the request path, then swapped in under the generation lock with
``peft.utils.hotswap`` (an in-place copy of the LoRA tensors). Because every generation holds
the same lock from its first token to its last, an answer is never produced half by one version
and half by another, and every answer is tagged with the version that wrote it.

On CPU the tokens may come from a faster merged copy of the base (``fastpath.py``, ``--serve-dtype``);
it is re-merged from the PEFT model, under the same lock, whenever the version to answer changes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..core.chat import Message, chat_prompt
from ..core.errors import UserError
from ..versions.registry import Registry
from ..feedback.records import BASE_VERSION, Sampling

log = logging.getLogger(__name__)

_SLOT = "default"
# Versions answering A/B comparisons are loaded beside the slot under this prefix, a few at most.
_EXTRA_PREFIX = "compare_"
_MAX_EXTRA = 4


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


@dataclass
class _Prepared:
    version: str
    path: str
    config: object
    state_dict: dict[str, torch.Tensor]
    hotswappable: bool


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


class ModelManager:
    """Generation and version swapping on one shared model.

    Args:
        model: a ``PeftModel`` wrapping the base, with an adapter named ``default``.
        tokenizer: its tokenizer (left padding, chat template).
        registry: where versions are published and the ACTIVE pointer lives.
        sampling: default decoding settings.
        system_prompt: the system message put before every question (None for none).
        fast: a merged serving copy (``hitl_app.serving.fastpath``) to generate with, or None to generate
            with ``model``. ``model`` stays the source of truth for versions either way.
    """

    def __init__(
        self, model, tokenizer, registry: Registry, sampling: Sampling, system_prompt: str | None, fast=None
    ) -> None:
        self.model = model
        self.fast = fast
        self.tokenizer = tokenizer
        self.registry = registry
        self.sampling = sampling
        self.system_prompt = system_prompt
        self._lock = threading.Lock()
        self._version = BASE_VERSION
        self._adapter = _SLOT
        self.threads_policy: Callable[[], int] | None = None  # CPU threads for the next answer
        self._watcher: threading.Thread | None = None
        self._stop_watch = threading.Event()
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self._judge = None  # the clinical-text judge, calibrated on the first check

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
    ):
        """Wrap a loaded base model with an identity LoRA slot (B = 0) and serve ACTIVE's version.

        With ``serve_dtype`` (see ``fastpath.resolve_serve_dtype``) answers come from a merged copy
        of the base in that dtype; the PEFT model still holds every version.
        """
        from peft import get_peft_model

        from .fastpath import build_serving_copy

        fast = build_serving_copy(base_model, serve_dtype)  # before get_peft_model changes the base in place
        model = get_peft_model(base_model, lora_config, adapter_name=_SLOT)
        model.eval()
        manager = cls(model, tokenizer, registry, sampling, system_prompt, fast=fast)
        manager.sync()
        return manager

    # ----- versions -----
    @property
    def version(self) -> str:
        """The version answering now."""
        return self._version

    def sync(self) -> bool:
        """Serve whatever ACTIVE names, if that is not already served. Returns whether it swapped."""
        target = self.registry.active().version
        if target == self._version:
            return False
        self.activate(target)
        return True

    def activate(self, version: str) -> float:
        """Swap ``version`` in between two generations; returns the seconds the swap held the lock.

        Raises:
            NotFoundError: the version is not published.
        """
        prepared = None if version == BASE_VERSION else self._prepare(version)
        started = time.perf_counter()
        with self._lock:
            if prepared is not None:
                self._apply(prepared)
            self._version = version
        held = time.perf_counter() - started
        log.info("now serving %s (swap held the lock %.1f ms)", version, held * 1e3)
        return held

    def _prepare(self, version: str) -> _Prepared:
        # Reading the adapter from disk and remapping its keys happens outside the lock, so
        # answers in progress are not held up by file I/O.
        from peft import LoraConfig
        from peft.utils.hotswap import check_hotswap_configs_compatible
        from peft.utils.save_and_load import _insert_adapter_name_into_state_dict, load_peft_weights

        path = str(self.registry.adapter_dir(version))
        config = LoraConfig.from_pretrained(path)
        device = str(next(self.model.parameters()).device)
        raw = load_peft_weights(path, device=device)
        state_dict = _insert_adapter_name_into_state_dict(raw, adapter_name=self._adapter, parameter_prefix="lora_")
        hotswappable = True
        try:
            check_hotswap_configs_compatible(self.model.peft_config[self._adapter], config)
            params = dict(self.model.named_parameters())
            for key, tensor in state_dict.items():
                name = key if key in params else f"base_model.model.{key}"
                if name not in params or params[name].shape != tensor.shape:
                    raise ValueError(f"{key} does not match the loaded adapter")
        except ValueError as exc:
            log.info("%s cannot be hot-swapped into the current slot (%s); loading it as a new adapter", version, exc)
            hotswappable = False
        return _Prepared(version, path, config, state_dict, hotswappable)

    def _apply(self, prepared: _Prepared) -> None:
        from peft.utils.hotswap import hotswap_adapter_from_state_dict

        if prepared.hotswappable:
            hotswap_adapter_from_state_dict(
                self.model, prepared.state_dict, adapter_name=self._adapter, config=prepared.config
            )
            return
        # A different LoRA shape (e.g. another rank): load it beside the old one, then drop the old.
        name = f"slot_{prepared.version}"
        self.model.load_adapter(prepared.path, adapter_name=name)
        self.model.set_adapter(name)
        self.model.delete_adapter(self._adapter)
        self._adapter = name
        self.model.eval()

    def watch(self, interval_s: float = 0.05) -> None:
        """Follow the ACTIVE pointer in a background thread, so new versions are served promptly."""
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop_watch.wait(interval_s):
                try:
                    self.sync()
                except Exception:
                    log.exception("could not switch to the ACTIVE version; still serving %s", self._version)

        self._watcher = threading.Thread(target=loop, name="active-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop following ACTIVE."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)

    # ----- generation -----
    def messages(self, prompt: str) -> list[Message]:
        """The chat messages for a question: the system prompt (if any) and the user's turn."""
        return chat_prompt(prompt, self.system_prompt)

    def encode(self, prompt: str, sampling: Sampling | None = None) -> dict[str, torch.Tensor]:
        """Tokenise a question through the chat template, checking that it fits the context.

        Raises:
            UserError: the prompt is empty, or too long for the model's context.
        """
        if not prompt or not prompt.strip():
            raise UserError("the question is empty")
        sampling = sampling or self.sampling
        inputs = self.tokenizer.apply_chat_template(
            self.messages(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        n = int(inputs["input_ids"].shape[1])
        room = self.context_length - sampling.max_new_tokens
        if n > room:
            raise UserError(
                f"the question is {n} tokens long; this model reads at most {room} "
                f"({self.context_length} tokens of context, {sampling.max_new_tokens} kept for the answer)"
            )
        return inputs

    def _generate_kwargs(self, inputs, sampling: Sampling, k: int, stop: threading.Event, streamer=None) -> dict:
        from transformers import StoppingCriteriaList

        device = next(self.model.parameters()).device
        kwargs = {key: value.to(device) for key, value in inputs.items()}
        kwargs.update(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.do_sample,
            num_return_sequences=k,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
            streamer=streamer,
        )
        if sampling.do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        return kwargs

    def _run(
        self, inputs, sampling: Sampling, k: int, stop: threading.Event, streamer=None, tag=None, version: str | None = None
    ) -> Answer:
        started = time.perf_counter()
        with self._lock:
            version = version or self._version
            if tag is not None:
                tag["version"] = version  # read by stream(): its updates carry the version writing them
            self._apply_threads()
            kwargs = self._generate_kwargs(inputs, sampling, k, stop, streamer)
            with torch.inference_mode(), self._adapter_for(version):
                out = self._generate(version, kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[:, prompt_len:]
        texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        new_tokens = int((new != self.tokenizer.pad_token_id).sum().item())
        return Answer(texts, version, sampling, int(prompt_len), new_tokens, time.perf_counter() - started)

    def _generate(self, version: str, kwargs: dict) -> torch.Tensor:
        # Called under the lock with ``version``'s weights active in the PEFT model.
        if self.fast is not None and self._fast_holds(version):
            return self.fast.generate(**kwargs)
        return self.model.generate(**kwargs)

    def _fast_holds(self, version: str) -> bool:
        # Whether the fast copy now holds ``version``; ``prepare`` logs why it cannot, once per version.
        from .fastpath import FastPathUnsupported

        try:
            self.fast.prepare(self.model, version)
        except FastPathUnsupported:
            return False
        return True

    @contextlib.contextmanager
    def _adapter_for(self, version: str) -> Iterator[None]:
        """Run the block (under the lock) with ``version``'s weights active, then restore the serving ones.

        The serving version is in the slot already. Another published version (an A/B comparison)
        is loaded once as a named adapter beside it and switched to for the block; published
        versions never change, so the loaded copy stays valid. At most ``_MAX_EXTRA`` are kept.
        """
        if version == BASE_VERSION:
            with self.model.disable_adapter():
                yield
            return
        if version == self._version:
            yield
            return
        name = f"{_EXTRA_PREFIX}{version}"
        if name not in self.model.peft_config:
            self.registry.adapter_dir(version)  # NotFoundError for an unknown version, before loading
            extra = [n for n in self.model.peft_config if n.startswith(_EXTRA_PREFIX)]
            for stale in extra[: max(0, len(extra) - _MAX_EXTRA + 1)]:
                self.model.delete_adapter(stale)
            self.model.load_adapter(str(self.registry.adapter_dir(version)), adapter_name=name)
        self.model.set_adapter(name)
        try:
            yield
        finally:
            self.model.set_adapter(self._adapter)
            self.model.eval()

    def start_compiled_decoding(self, buckets: Sequence[int] | None = None, rows: Sequence[int] = (1,)) -> bool:
        """Compile the fast copy's decoding in the background (``compiled_decode.py``).

        The warm-up decodes a real question through the same arguments as an answer, so the
        compiled graphs fit the answers to come. Returns False (and does nothing) when there is no
        fast copy to compile, e.g. with ``--serve-dtype float32`` or on CUDA.

        Args:
            buckets: the static cache lengths to compile, in order (default: from the answer length
                and the model's context, ``compiled_decode.default_buckets``).
            rows: the numbers of candidates sampled together to compile for (1: single answers).
        """
        if self.fast is None:
            return False
        from .compiled_decode import default_buckets

        if buckets is None:
            buckets = default_buckets(self.sampling.max_new_tokens, self.context_length)
        if not buckets:
            log.info("compiled decoding is off: %d-token answers need a longer cache than it keeps", self.sampling.max_new_tokens)
            return False
        decoder = self.fast.compile_decoding(buckets, rows)
        question = "What is the usual adult dose of paracetamol?"
        decoder.start(self._generate_kwargs(self.encode(question), self.sampling, 1, threading.Event()))
        return True

    def clinical_text_nll(self, prompt: str, text: str):
        """How the base model reads ``text`` as the answer to ``prompt``: (NLL per token, the judge).

        Runs under the generation lock with the adapter disabled, between two answers. The judge
        is calibrated on the shipped reference answers the first time (a few seconds, once).
        """
        from ..evaluation.clinical_text import ClinicalTextJudge, reply_nll
        from ..evaluation.estimators import ModelView

        base = ModelView.base(self.model)
        with self._lock, torch.inference_mode():
            if self._judge is None:
                self._judge = ClinicalTextJudge.calibrate(base, self.tokenizer, self.system_prompt)
            nll = reply_nll(base, self.tokenizer, [self.messages(prompt)], [text])[0]
        return nll, self._judge

    def _apply_threads(self) -> None:
        # Called under the lock: torch's thread count is process-wide, and only one answer runs.
        if self.threads_policy is None:
            return
        wanted = self.threads_policy()
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

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
        streamer = CandidateStreamer(self.tokenizer, k)
        stop = threading.Event()
        outcome: dict = {}

        def produce() -> None:
            try:
                outcome["answer"] = self._run(inputs, sampling, k, stop, streamer, tag=outcome)
            except BaseException as exc:  # re-raised in the reader's thread below
                outcome["error"] = exc
            finally:
                streamer.end()

        worker = threading.Thread(target=produce, name="generate", daemon=True)
        worker.start()
        try:
            for texts in streamer:
                yield StreamUpdate(texts=texts, version=outcome.get("version", self._version))
        finally:
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        answer = outcome["answer"]
        yield StreamUpdate(texts=list(answer.candidates), version=answer.version, answer=answer)
