"""The fast decode path for CPU serving: a bf16 copy of the base with the served LoRA merged in.

- ``resolve_serve_dtype`` turns ``--serve-dtype`` into the copy's dtype, or None for no copy:
  ``auto`` picks bf16 on CPUs with native bf16 dot products, and nothing changes on CUDA or with
  4-bit loading.
- ``MergedServingCopy`` holds one version at a time: ``prepare`` writes the PEFT model's base
  weights plus its active LoRA deltas (``LoraLayer.get_delta_weight``) into the copy's weights, so
  a decode step runs no LoRA wrappers. The PEFT model stays the source of truth: hot-swap,
  comparison adapters and ``disable_adapter`` act on it, and the copy is re-merged from it when
  the version to answer is not the one it holds. Adapters the merge cannot reproduce (LoRA
  variants such as DoRA, LoRA biases, ``modules_to_save``) raise ``FastPathUnsupported``, and
  that version is answered by the PEFT model.
- ``FewRowsGemv`` picks the matrix-vector kernel per forward: forwards over one or two rows (batch-1
  decoding, the default two candidates) use ATen's bf16 GEMV, larger ones (prefill, more
  candidates) oneDNN.
- ``compile_decoding`` adds compiled decode steps (``compiled_decode.py``, ``--compile-decode``).

The copy answers through ``generate`` like the PEFT model, so streamers, stopping criteria and
batched candidates work unchanged. Training and evaluation keep using the fp32 PEFT model. Why
each choice is faster, with the measurements, is in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import platform
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from .activity import AnswerActivity
from .compiled_decode import CompiledDecoder, CompiledState, Shape

log = logging.getLogger(__name__)

ServeDtype = Literal["auto", "float32", "bfloat16"]
# CPU flags of native bf16 dot products; without them bf16 matmuls are emulated and slower than fp32.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class FastPathUnsupported(ValueError):
    """The active adapter uses a PEFT feature the merged copy cannot reproduce."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (x86 ``avx512_bf16`` or ``amx_bf16``).

    Read from ``/proc/cpuinfo``; elsewhere (not Linux, or not x86) the answer is False, so
    ``auto`` keeps fp32 unless bf16 is asked for explicitly.
    """
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def resolve_serve_dtype(serve_dtype: ServeDtype, device: str, load_in_4bit: bool) -> torch.dtype | None:
    """The dtype of the fast serving copy, or None to serve from the PEFT model as before.

    ``auto`` picks bf16 on a CPU with native bf16 instructions (where it decodes faster than fp32)
    and None elsewhere. On CUDA and with 4-bit loading the model is already served in bf16,
    so nothing changes there.

    Args:
        serve_dtype: the ``--serve-dtype`` setting.
        device: the resolved device, ``cpu`` or ``cuda``.
        load_in_4bit: the ``--load-in-4bit`` setting.
    """
    if device != "cpu" or load_in_4bit or serve_dtype == "float32":
        return None
    if serve_dtype == "bfloat16":
        if not cpu_has_native_bf16():
            log.warning("--serve-dtype bfloat16 on a CPU without native bf16 instructions: answers may be slower than fp32")
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_native_bf16() else None


class FewRowsGemv:
    """Forwards over one or two rows use ATen's GEMV instead of oneDNN, in threads that are serving.

    The switch (``torch.backends.mkldnn.enabled``) is process-wide. The hook is registered once per
    model (a compiled model must keep the hooks it was compiled with; its twin runs them eagerly,
    see ``compiled_decode``) and acts only in a thread inside ``serving()``; callers hold the
    generation lock, so one thread at a time. Other threads (a compile warm-up, fp32 training)
    leave the switch alone; their fp32 matmuls do not use oneDNN either way.
    """

    aten_max_rows = 2  # forwards over at most this many rows skip oneDNN (docs/performance.md)

    def __init__(self) -> None:
        self._serving = threading.local()

    def attach(self, model: torch.nn.Module) -> None:
        """Choose the kernel before each forward of ``model``."""
        model.register_forward_pre_hook(self._choose, with_kwargs=True)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Within the block, this thread's forwards over few rows skip oneDNN; the switch is then restored."""
        previous = torch.backends.mkldnn.enabled
        self._serving.previous = previous
        try:
            yield
        finally:
            self._serving.previous = None
            torch.backends.mkldnn.enabled = previous

    def _choose(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        previous = getattr(self._serving, "previous", None)
        if previous is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            embeds = kwargs.get("inputs_embeds")
            rows = int(embeds.shape[:-1].numel()) if embeds is not None else self.aten_max_rows + 1
        else:
            rows = int(ids.numel())
        torch.backends.mkldnn.enabled = previous and rows > self.aten_max_rows


class FastPathState(BaseModel):
    """The fast serving copy's state, as ``/status`` reports it."""

    model_config = ConfigDict(frozen=True)

    dtype: str = Field(description="the copy's dtype, e.g. bfloat16")
    holds: str | None = Field(description="the version merged into the copy (None before the first answer)")
    merge_ms: int | None = Field(description="how long the last merge of a version into the copy took")
    refused: dict[str, str] = Field(description="versions the copy cannot hold, and why; the PEFT model answers for them")
    compiled: CompiledState | None = Field(description="compiled decoding's state; None when it is off")


class MergedServingCopy:
    """A plain (no PEFT) copy of the base in ``dtype``, holding one version's merged weights.

    Args:
        base_model: the loaded base, before ``get_peft_model`` wraps it (it is copied, not kept).
        dtype: the copy's dtype, e.g. ``torch.bfloat16``.
    """

    def __init__(self, base_model: torch.nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.model = copy.deepcopy(base_model).to(dtype).eval()
        self.model.requires_grad_(False)
        self.holds: str | None = None  # the version whose weights are merged in now
        self.refused: dict[str, str] = {}  # versions the copy cannot hold, and why
        self.refresh_s: float | None = None  # how long the last merge took
        self._gemv = FewRowsGemv()
        self._gemv.attach(self.model)
        self.compiled: CompiledDecoder | None = None  # set by compile_decoding()

    def prepare(self, peft_model, version: str) -> None:
        """Make the copy hold ``version``: the PEFT model's base weights plus its active LoRA deltas.

        Call it with the PEFT model set up as it would answer ``version`` (the adapter active, or
        disabled for the base), under the generation lock. Published versions never change, so a
        copy that already holds ``version`` is left as it is, and a version it could not hold is
        refused at once, with one warning in the log when it is first refused.

        Raises:
            FastPathUnsupported: an active adapter uses a LoRA variant (DoRA...), a LoRA bias or ``modules_to_save``,
                or a layer's delta does not fit its weight; the copy is then marked as holding nothing.
        """
        if self.holds == version:
            return
        if version in self.refused:
            raise FastPathUnsupported(self.refused[version])
        started = time.perf_counter()
        self.holds = None  # until the merge has completed
        try:
            self._merge(peft_model)
        except FastPathUnsupported as exc:
            self.refused[version] = str(exc)
            log.warning("fast path: %s is answered on the PEFT model instead: %s", version, exc)
            raise
        self.holds = version
        self.refresh_s = time.perf_counter() - started
        log.info("fast path: merged %s into the %s serving copy in %.0f ms", version, self.dtype, self.refresh_s * 1e3)

    def _merge(self, peft_model) -> None:
        # Base weights plus every active adapter's delta, into the copy's weights, layer by layer.
        from peft.tuners.lora import LoraLayer

        targets = dict(self.model.named_modules())
        _check_adapters(peft_model)
        with torch.no_grad():
            for name, layer in peft_model.get_base_model().named_modules():
                if not isinstance(layer, LoraLayer):
                    continue
                base = layer.get_base_layer()
                weight = base.weight.detach().float()
                for adapter in [] if layer.disable_adapters or layer.merged else layer.active_adapters:
                    if adapter not in layer.lora_A:
                        continue
                    if layer.lora_variant.get(adapter) is not None or layer.lora_bias.get(adapter):
                        raise FastPathUnsupported(f"{name}: adapter {adapter} uses a LoRA variant (DoRA...) or a LoRA bias")
                    delta = layer.get_delta_weight(adapter)
                    if delta.shape != weight.shape:
                        raise FastPathUnsupported(f"{name}: LoRA delta {tuple(delta.shape)} != weight {tuple(weight.shape)}")
                    weight = weight + delta.float()
                targets[name].weight.copy_(weight)

    def compile_decoding(
        self,
        buckets: Sequence[int],
        rows: Sequence[int] = (1,),
        activity: AnswerActivity | None = None,
        precompile: Callable[[Shape], float] | None = None,
    ) -> CompiledDecoder:
        """Add compiled decoding (``compiled_decode.py``; see ``CompiledDecoder`` for the arguments);
        start compiling with its ``start``.

        The compiled twin shares this copy's weights, so merges apply to it too.
        """
        self.compiled = CompiledDecoder(self.model, buckets, rows, activity, precompile)
        return self.compiled

    def generate(self, **kwargs) -> torch.Tensor:
        """``generate`` on the copy (same arguments as the PEFT model's), one or two rows on ATen's GEMV.

        A call whose compiled shape is ready decodes compiled; others decode uncompiled.
        """
        with self._gemv.serving():
            shape = self.compiled.shape_for(kwargs) if self.compiled is not None else None
            if shape is not None:
                return self.compiled.generate(shape, **kwargs)
            return self.model.generate(**kwargs)

    def describe(self) -> FastPathState:
        """For ``/status``: the copy's dtype, the version it holds, and compiled decoding's state."""
        return FastPathState(
            dtype=str(self.dtype).removeprefix("torch."),
            holds=self.holds,
            merge_ms=None if self.refresh_s is None else round(self.refresh_s * 1e3),
            refused=dict(self.refused),
            compiled=self.compiled.describe() if self.compiled is not None else None,
        )


def _check_adapters(peft_model) -> None:
    # Weights outside the LoRA layers (modules_to_save, trainable tokens) are not merged.
    for adapter in peft_model.active_adapters:
        config = peft_model.peft_config.get(adapter)
        if config is not None and (getattr(config, "modules_to_save", None) or getattr(config, "trainable_token_indices", None)):
            raise FastPathUnsupported(f"adapter {adapter} trains modules_to_save or tokens outside its LoRA layers")


def build_serving_copy(base_model: torch.nn.Module, dtype: torch.dtype | None) -> MergedServingCopy | None:
    """The fast serving copy of ``base_model`` in ``dtype``, or None when ``dtype`` is None.

    Call before ``get_peft_model`` wraps the base (it injects LoRA layers in place).

    Args:
        base_model: the loaded base model (on CPU).
        dtype: from ``resolve_serve_dtype``.
    """
    if dtype is None:
        return None
    started = time.perf_counter()
    fast = MergedServingCopy(base_model, dtype)
    log.info("fast path: %s serving copy built in %.1f s", dtype, time.perf_counter() - started)
    return fast
