"""Swapping LoRA versions on the shared PEFT model, and following the ACTIVE pointer.

The PEFT model has one adapter slot. Serving ``base`` runs with the adapter disabled; serving
``vNNNN`` means that version's weights sit in the slot. A version is read from disk and checked
off the request path (``AdapterSlot.prepare``), then copied into the slot in place with
``peft.utils.hotswap`` (``AdapterSlot.apply``), which the caller runs under its generation lock.
Versions answering A/B comparisons are loaded beside the slot, a few at most
(``AdapterSlot.weights_for``). ``ActiveWatcher`` polls the registry's ACTIVE pointer in a
background thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..feedback.records import BASE_VERSION
from ..versions.registry import Registry

log = logging.getLogger(__name__)

SLOT = "default"
# Versions answering A/B comparisons are loaded beside the slot under this prefix, a few at most.
_EXTRA_PREFIX = "compare_"
_MAX_EXTRA = 4


@dataclass
class PreparedVersion:
    """A published version read from disk, ready to be put in the slot."""

    version: str
    path: str
    config: object  # its LoraConfig
    state_dict: dict[str, torch.Tensor]  # its LoRA tensors, keyed by the slot's parameter names
    hotswappable: bool  # whether it fits the slot's shapes (else it is loaded as a new adapter)


class AdapterSlot:
    """Which version the PEFT model serves, and the adapters that hold it and the comparison versions.

    Not thread-safe by itself: ``apply`` and ``weights_for`` change the model and must run under
    the caller's generation lock; ``prepare`` only reads and may run anywhere.

    Args:
        model: a ``PeftModel`` wrapping the base, with an adapter named ``default``.
        registry: where versions are published.
    """

    def __init__(self, model, registry: Registry) -> None:
        self.model = model
        self.registry = registry
        self.version = BASE_VERSION  # the version answering now
        self.adapter = SLOT  # the adapter holding it (another name after a shape-changing load)

    def prepare(self, version: str) -> PreparedVersion | None:
        """Read ``version``'s adapter and check whether it can be hot-swapped; None for ``base``.

        Reading from disk and remapping the keys happen here, outside the lock, so answers in
        progress are not held up by file I/O.

        Raises:
            NotFoundError: the version is not published.
        """
        if version == BASE_VERSION:
            return None
        from peft import LoraConfig
        from peft.utils.hotswap import check_hotswap_configs_compatible
        from peft.utils.save_and_load import _insert_adapter_name_into_state_dict, load_peft_weights

        path = str(self.registry.adapter_dir(version))
        config = LoraConfig.from_pretrained(path)
        device = str(next(self.model.parameters()).device)
        raw = load_peft_weights(path, device=device)
        state_dict = _insert_adapter_name_into_state_dict(raw, adapter_name=self.adapter, parameter_prefix="lora_")
        hotswappable = True
        try:
            check_hotswap_configs_compatible(self.model.peft_config[self.adapter], config)
            params = dict(self.model.named_parameters())
            for key, tensor in state_dict.items():
                name = key if key in params else f"base_model.model.{key}"
                if name not in params or params[name].shape != tensor.shape:
                    raise ValueError(f"{key} does not match the loaded adapter")
        except ValueError as exc:
            log.info("%s cannot be hot-swapped into the current slot (%s); loading it as a new adapter", version, exc)
            hotswappable = False
        return PreparedVersion(version, path, config, state_dict, hotswappable)

    def apply(self, version: str, prepared: PreparedVersion | None) -> None:
        """Serve ``version`` from now on, its weights (``prepare``'s result) put in the slot. Call under the lock."""
        if prepared is not None:
            self._load(prepared)
        self.version = version

    def _load(self, prepared: PreparedVersion) -> None:
        from peft.utils.hotswap import hotswap_adapter_from_state_dict

        if prepared.hotswappable:
            hotswap_adapter_from_state_dict(self.model, prepared.state_dict, adapter_name=self.adapter, config=prepared.config)
            return
        # A different LoRA shape (e.g. another rank): load it beside the old one, then drop the old.
        name = f"slot_{prepared.version}"
        self.model.load_adapter(prepared.path, adapter_name=name)
        self.model.set_adapter(name)
        self.model.delete_adapter(self.adapter)
        self.adapter = name
        self.model.eval()

    @contextlib.contextmanager
    def weights_for(self, version: str) -> Iterator[None]:
        """Run the block (under the lock) with ``version``'s weights active, then restore the serving ones.

        The serving version is in the slot already. Another published version (an A/B comparison)
        is loaded once as a named adapter beside it and switched to for the block; published
        versions never change, so the loaded copy stays valid. At most ``_MAX_EXTRA`` are kept.

        Raises:
            NotFoundError: ``version`` is not published (raised before anything is loaded).
        """
        if version == BASE_VERSION:
            with self.model.disable_adapter():
                yield
            return
        if version == self.version:
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
            self.model.set_adapter(self.adapter)
            self.model.eval()


class ActiveWatcher:
    """Calls ``sync`` every ``interval_s`` in a daemon thread, so a new ACTIVE version is served promptly.

    Args:
        sync: serves whatever ACTIVE names (``ModelManager.sync``).
        serving: the version serving now, named in the log when ``sync`` fails.
    """

    def __init__(self, sync: Callable[[], bool], serving: Callable[[], str]) -> None:
        self._sync = sync
        self._serving = serving
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None  # set by the first start()

    def start(self, interval_s: float = 0.05) -> None:
        """Start following ACTIVE; a second call does nothing."""
        if self.thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self._sync()
                except Exception:
                    log.exception("could not switch to the ACTIVE version; still serving %s", self._serving())

        self.thread = threading.Thread(target=loop, name="active-watcher", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop following ACTIVE (waits up to 2 s for the thread)."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
