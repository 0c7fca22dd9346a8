"""Compiled decoding for the CPU serving copy: ``torch.compile`` over static KV caches.

Once the weights are bf16 and merged (``fastpath.py``), much of a decode step is small operators
and Python calls (norms, rotary embeddings, cache concatenation, attention for one query).
Compiling the decode step fuses them into a few generated kernels. A compiled step needs fixed
shapes, so each answer decodes into a static cache of a fixed length (a *bucket*): the smallest of
``buckets`` that holds the prompt and the longest answer. One graph is compiled per bucket and row
count, and only for the shapes in use: the app's default candidates in the first bucket at
start-up, and any other shape when an answer first asks for it. Until a shape is ready, and for
anything none takes (a row count not compiled for, a prompt longer than the largest bucket), the
uncompiled copy answers.

Compiling must never slow answers: a cold compile runs in a low-priority child process that fills
Inductor's shared disk cache (``precompile.py``); this process then only loads the shape, in a
background thread that pauses whenever an answer is being generated (``activity.give_way``).

The compiled model is a twin of the serving copy that shares its weight tensors (no extra memory),
so a merge into the copy is a merge into the twin. Its attention is the plain ("eager") one, which
compiles into fused kernels (SDPA's CPU kernel for one query over a long masked static cache is
the slower choice here). Decoding goes through ``generate`` with transformers' own compiled-forward
switch (``CompileConfig``), so streamers, stopping criteria and sampling are unchanged. Compile
times and speeds are in docs/performance.md.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from .activity import AnswerActivity, give_way

log = logging.getLogger(__name__)

Shape = tuple[int, int]  # (static cache length, rows decoded together)

# A typical question, with the system prompt and chat template, fits in this many tokens; the
# first bucket compiled holds it plus the longest answer.
_TYPICAL_PROMPT_TOKENS = 128
_LARGEST_BUCKET = 2048


def default_buckets(max_new_tokens: int, context_length: int) -> tuple[int, ...]:
    """Cache lengths to compile, most useful first: powers of two from the one that holds a typical
    question and ``max_new_tokens`` (at least 256), up to 2048 or the model's context.

    With the default 256-token answers: 512, 1024, 2048. Longer prompts decode uncompiled.
    """
    first = 256
    while first < max_new_tokens + _TYPICAL_PROMPT_TOKENS:
        first *= 2
    buckets, size = [], first
    while size <= min(_LARGEST_BUCKET, context_length):
        buckets.append(size)
        size *= 2
    return tuple(buckets)


def weight_sharing_twin(model: torch.nn.Module, attn_implementation: str = "eager") -> torch.nn.Module:
    """A structural copy of ``model`` whose parameters, buffers and forward hooks are ``model``'s own.

    Writes into ``model``'s weights (merges) are seen by the twin; only the module objects and the
    config are new, so the twin can use another attention implementation.
    """
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    for module in model.modules():  # hooks hold their owners' state (e.g. a thread-local): share, not copy
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            shared.update({id(hook): hook for hook in hooks.values()})
    twin = copy.deepcopy(model, memo=shared)
    twin.set_attn_implementation(attn_implementation)
    return twin


def _serving_guards(entries: list) -> list[bool]:
    """Which of dynamo's guards to keep: not those on the twin's modules, nor the global state.

    - Module guards check, at every decode step, that no module attribute changed, a cost paid
      on every token. The twin's modules never change after it is built: merges write into the
      weight tensors in place, which does not touch the modules.
    - The global state guard includes the CPU thread count, which answers change with the
      trainer's activity; it would recompile (tens of seconds) inside an answer. The kernels
      read the thread count at run time instead (``cpp.dynamic_threads``). Its other parts
      (grad mode, default dtype) are the same for every answer: all run in inference mode.
    Guards on the inputs (token ids, the static cache's shapes) are kept, so each bucket has its
    own graph.
    """
    keep = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
    return [kept and entry.guard_type != "GLOBAL_STATE" for kept, entry in zip(keep, entries)]


class CompiledState(BaseModel):
    """Compiled decoding's state, as ``/status`` reports it."""

    model_config = ConfigDict(frozen=True)

    buckets: list[int] = Field(description="the KV-cache lengths compiled for, in tokens")
    rows: list[int] = Field(description="the batch sizes compiled for (answers per call)")
    ready: list[list[int]] = Field(description="the [bucket, rows] shapes compiled and in use")
    compiling: list[int] | None = Field(description="the [bucket, rows] shape compiling now, if any")
    waiting: list[list[int]] = Field(default_factory=list, description="shapes asked for by answers, to compile next")
    compile_s: dict[str, float] = Field(description="seconds each shape took to compile, keyed 'BUCKETxROWS'")
    error: str | None = Field(description="why compiling failed; answers are then decoded uncompiled")


class CompiledDecoder:
    """``generate`` on a weight-sharing twin whose decode steps run compiled, per cache shape.

    A shape is a bucket (the cache length) and a row count: 1 for a single answer, K for K
    candidates sampled in one call. Each shape has its own static cache and compiled graph.
    Shapes are compiled one at a time in a background thread: those given to ``start``, then
    those that answers ask for (``shape_for``), so only shapes in use are compiled.

    Args:
        model: the serving copy (a plain transformers causal LM on CPU).
        buckets: static cache lengths, in the order they are compiled.
        rows: the row counts each bucket may be compiled for (1, and the app's default candidates).
        activity: answers in flight; with it, compiling in this process pauses while one is
            generated (``activity.give_way``), so no answer waits for a compile.
        precompile: compiles a shape into the shared disk cache elsewhere first (``precompile``:
            a low-priority process), so that this process only loads it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        buckets: Sequence[int],
        rows: Sequence[int] = (1,),
        activity: AnswerActivity | None = None,
        precompile: Callable[[Shape], float] | None = None,
    ) -> None:
        from transformers import CompileConfig

        if not buckets or any(b < 2 for b in buckets):
            raise ValueError(f"compiled decoding needs cache lengths of at least 2 tokens (got {list(buckets)})")
        if not rows or any(r < 1 for r in rows):
            raise ValueError(f"compiled decoding needs row counts of at least 1 (got {list(rows)})")
        self.buckets = tuple(buckets)
        self.rows = tuple(dict.fromkeys(rows))
        self.activity = activity
        self.precompile = precompile
        self.twin = weight_sharing_twin(model)  # with the copy's hooks (the GEMV switch)
        # Those hooks flip process-wide switches: they run eagerly, around the compiled graph
        # (wrapped here, not where they are defined, so that serving without compiling never
        # imports dynamo: over a second of every start-up).
        for module in self.twin.modules():
            for hooks in (module._forward_pre_hooks, module._forward_hooks):
                for key, hook in hooks.items():
                    hooks[key] = torch.compiler.disable(hook)
        self._config = CompileConfig(
            fullgraph=False,
            dynamic=False,
            mode=None,  # torch.compile takes a mode or options, not both
            options={"guard_filter_fn": _serving_guards, "cpp.dynamic_threads": True},
        )
        # transformers compiles the decode step automatically only on accelerators; this flag of
        # CompileConfig ("compile on e.g. CPU") is how generate is told to do it here too.
        self._config._compile_all_devices = True
        self._caches: dict[Shape, object] = {}
        self._ready: set[Shape] = set()
        self._lock = threading.Lock()  # guards the shapes' state, compile_s and error
        self._changed = threading.Condition(self._lock)
        self._waiting: list[Shape] = []
        self._failed: set[Shape] = set()
        self.compiling: Shape | None = None
        self.compile_s: dict[Shape, float] = {}
        self.error: str | None = None
        self._example: dict | None = None
        self._started = False
        # The compiling thread runs only while shapes are queued: a thread that lived on would
        # keep its own pool of torch threads beside the answers' (slowing 2-thread decoding 2x).
        self._worker: threading.Thread | None = None

    # ----- which answers it takes -----
    @property
    def ready(self) -> list[Shape]:
        """The shapes (bucket, rows) compiled so far, in order."""
        with self._lock:
            return sorted(self._ready)

    def shape_for(self, kwargs: dict) -> Shape | None:
        """The ready shape that takes this ``generate`` call, or None for the uncompiled path.

        The rows (prompts x ``num_return_sequences``) must be a compiled row count, and the cache
        must hold the prompt and ``max_new_tokens`` more; the smallest such cache is used. When
        none is ready, the smallest shape that would take the call is queued for compiling (once
        compiling has started), and this call decodes uncompiled.
        """
        ids = kwargs["input_ids"]
        rows = int(ids.shape[0]) * int(kwargs.get("num_return_sequences") or 1)
        needed = int(ids.shape[1]) + int(kwargs["max_new_tokens"])
        fitting = [shape for shape in self.ready if shape[1] == rows and shape[0] >= needed]
        if fitting:
            return min(fitting)
        wanted = [(bucket, rows) for bucket in self.buckets if bucket >= needed and rows in self.rows]
        if wanted and self._started:
            self.want(min(wanted))
        return None

    def want(self, shape: Shape) -> None:
        """Queue ``shape`` for compiling, unless it is ready, queued, compiling or failed already."""
        with self._lock:
            if shape in self._ready or shape in self._waiting or shape in self._failed or shape == self.compiling:
                return
            self._waiting.append(shape)
            self._changed.notify_all()
            if self._started and self._worker is None:
                self._worker = threading.Thread(target=self._work, name="compile-decode", daemon=True)
                self._worker.start()

    def generate(self, shape: Shape, **kwargs) -> torch.Tensor:
        """``generate`` through ``shape``'s static cache and compiled decode step.

        The caller serialises answers (the generation lock): a shape has one cache. Runs in
        inference mode, as the cache's tensors were made in it.
        """
        with torch.inference_mode():
            cache = self._caches[shape]
            cache.reset()
            return self.twin.generate(**kwargs, past_key_values=cache, compile_config=self._config)

    # ----- compiling -----
    def start(self, example: dict, shapes: Sequence[Shape] | None = None) -> None:
        """Start compiling in a daemon thread: ``shapes`` first (default: every bucket x rows), then
        whatever answers ask for. Each shape is used as soon as it is ready.

        Args:
            example: the keyword arguments of a real one-prompt ``generate`` call (the same kinds
                of inputs, so the compiled graphs' guards hold for real answers); its
                ``num_return_sequences`` is set to each row count in turn.
            shapes: the (bucket, rows) shapes to compile at once, in order.
        """
        if self._started:
            raise RuntimeError("compiled decoding was started already")
        self._example = dict(example)
        self._started = True
        for shape in [(b, r) for b in self.buckets for r in self.rows] if shapes is None else shapes:
            self.want(tuple(shape))

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until no shape is queued or compiling; True if none failed."""
        if not self._started:
            raise RuntimeError("compiled decoding was not started")
        with self._changed:
            self._changed.wait_for(lambda: not self._waiting and self.compiling is None, timeout_s)
            return not self._waiting and self.compiling is None and not self._failed

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._waiting:
                    self._worker = None  # the next want() starts a new thread
                    return
                shape = self.compiling = self._waiting.pop(0)
            try:
                seconds = self._compile(shape)
            except Exception as exc:  # the uncompiled copy keeps answering; the error is shown in /status
                log.warning("compiled decoding of %d x %d failed: %s", *shape, exc, exc_info=True)
                with self._changed:
                    self._failed.add(shape)
                    self.error = f"{type(exc).__name__}: {exc}"
                    self.compiling = None
                    self._changed.notify_all()
                continue
            with self._changed:
                self._ready.add(shape)
                self.compile_s[shape] = seconds
                self.compiling = None
                self._changed.notify_all()
            log.info("compiled decoding: %d-token cache x %d rows ready in %.1f s", *shape, seconds)

    def _compile(self, shape: Shape) -> float:
        # The cold compile in a low-priority process first, then the load here, giving way to answers.
        started = time.perf_counter()
        if self.precompile is not None:
            background = self.precompile(shape)
            log.info("compiled decoding: %d x %d compiled in a low-priority process in %.1f s", *shape, background)
        loading = time.perf_counter()
        if self.activity is None:
            self.compile_shape(shape, self._example)
        else:
            with give_way(self.activity):
                self.compile_shape(shape, self._example)
        log.info("compiled decoding: %d x %d loaded in this process in %.1f s", *shape, time.perf_counter() - loading)
        return time.perf_counter() - started

    def compile_shape(self, shape: Shape, example: dict) -> None:
        """Compile ``shape`` here and now: a two-token ``generate`` through its cache (the first
        token from the uncompiled prefill, the second from a compiled decode step).

        Raises:
            ValueError: the example is not a single prompt, or does not fit the shape's cache.
        """
        from transformers import StaticCache

        bucket, rows = shape
        kwargs = dict(example)
        if kwargs["input_ids"].shape[0] != 1:
            raise ValueError("the warm-up example must be a single prompt")
        if int(kwargs["input_ids"].shape[1]) + 2 > bucket:
            raise ValueError(f"the warm-up prompt does not fit a {bucket}-token cache")
        # min_new_tokens keeps an early end-of-turn from skipping the compiled step; generate
        # refuses several greedy rows, and sampling does not change the forward.
        kwargs.update(max_new_tokens=2, min_new_tokens=2, streamer=None, num_return_sequences=rows)
        kwargs["do_sample"] = kwargs["do_sample"] or rows > 1
        self._caches[shape] = StaticCache(config=self.twin.config, max_cache_len=bucket)
        self.generate(shape, **kwargs)

    def describe(self) -> CompiledState:
        """For ``/status``: the shapes ([bucket, rows]) asked for, ready, compiling and waiting, compile times, any error."""
        with self._lock:
            return CompiledState(
                buckets=list(self.buckets),
                rows=list(self.rows),
                ready=[list(shape) for shape in sorted(self._ready)],
                compiling=None if self.compiling is None else list(self.compiling),
                waiting=[list(shape) for shape in self._waiting],
                compile_s={f"{b}x{r}": round(s, 1) for (b, r), s in sorted(self.compile_s.items())},
                error=self.error,
            )
