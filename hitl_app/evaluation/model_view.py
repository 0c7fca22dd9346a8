"""A model plus the context it must run under: how one ``PeftModel`` serves as several models.

``ModelView.base(m)`` runs with the adapter disabled; ``ModelView.adapter(m, "serving")`` switches
to another loaded adapter with ``set_adapter`` and back. Views change the model's state while they
are entered, so a model shared with the serving path must be evaluated under its lock. Every
estimator puts the model in eval mode (no dropout) for the call and restores each module's
previous mode afterwards.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch


@dataclass(frozen=True)
class ModelView:
    """A model together with the context its forward passes and generation must run under.

    Args:
        model: a causal LM (``transformers`` model or ``PeftModel``).
        context: a zero-argument callable returning a context manager, entered around every use
            of ``model`` (``nullcontext`` for the model as it is).
    """

    model: Any
    context: Callable[[], ContextManager[Any]] = nullcontext

    @classmethod
    def base(cls, peft_model) -> "ModelView":
        """The base model under a ``PeftModel``: every adapter disabled."""
        if not hasattr(peft_model, "disable_adapter"):
            raise ValueError(f"{type(peft_model).__name__} has no adapters to disable; pass the base model itself")
        return cls(peft_model, peft_model.disable_adapter)

    @classmethod
    def adapter(cls, peft_model, adapter_name: str) -> "ModelView":
        """``peft_model`` with ``adapter_name`` active; the previously active adapter is restored after.

        Raises:
            ValueError: the adapter is not loaded (the error lists the loaded ones).
        """
        loaded = sorted(getattr(peft_model, "peft_config", {}) or {})
        if adapter_name not in loaded:
            raise ValueError(f"no adapter {adapter_name!r} in the model; loaded adapters: {loaded or 'none'}")
        return cls(peft_model, lambda: _use_adapter(peft_model, adapter_name))


def as_view(model: ModelView | Any) -> ModelView:
    """``model`` as a view: a plain model runs as it is."""
    return model if isinstance(model, ModelView) else ModelView(model)


@contextmanager
def _use_adapter(model, name: str) -> Iterator[None]:
    # set_adapter also marks the adapter trainable; put every requires_grad flag back afterwards.
    previous = model.active_adapter
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for n, p in model.named_parameters():
            if n in grads and p.requires_grad != grads[n]:
                p.requires_grad_(grads[n])


@contextmanager
def entered(view: ModelView) -> Iterator[Any]:
    """Eval mode (restored module by module afterwards) and the view's context."""
    modes = [(m, m.training) for m in view.model.modules()]
    view.model.eval()
    try:
        with view.context():
            yield view.model
    finally:
        for module, training in modes:
            module.training = training


def device_of(model) -> torch.device:
    """The device the model's weights are on."""
    return next(model.parameters()).device


def pad_token_id(tokenizer) -> int:
    """The id to pad batches with: the tokenizer's pad token, else its end of sequence, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def context_length(model) -> int | None:
    """How many positions the model reads (None when its config does not say)."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward can compute logits for its last positions only (``logits_to_keep``)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters
