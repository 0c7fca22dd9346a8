"""Reward scores for the candidates a clinician is shown, from the serving version's reward model.

A round with preference pairs publishes a reward model beside its policy adapter (``reward/`` in the
version folder: a LoRA and a score head on a sequence-classification copy of the base). The scorer
keeps that copy of the base loaded once, in this process, and the reward adapters of the versions it
was asked about by name, so scoring after a swap costs one adapter load, not a model load. A
version without a reward model of its own (a round with labels only) is scored by its nearest
ancestor's (``Registry.reward_source``); with none at all, candidates carry no scores.

Scores are a learned proxy for the clinicians' preferences, not a judgement: the UI labels them so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ..core.chat import chat_prompt
from ..versions.registry import Registry

log = logging.getLogger(__name__)

# Reward adapters kept loaded: the serving version's and the one before it, so a rollback or an
# A/B pair does not reload.
KEEP_ADAPTERS = 2


class RewardScorer:
    """Scores candidate answers with the reward model that goes with the version that wrote them.

    Args:
        registry: where versions and their reward adapters are published.
        base_source: folder or hub id of the base model (the reward model's backbone).
        tokenizer: the base's tokenizer, with its chat template.
        device: ``cpu`` or ``cuda``.
        load_in_4bit: load the backbone in 4 bits (CUDA), as the serving base is.
        dtype: the backbone's dtype (``--serve-dtype``'s choice: bf16 on a CPU with native bf16,
            where scoring takes about half the time of fp32); None: the loader's default.
        batch_size: candidates scored per forward pass.
    """

    def __init__(
        self,
        registry: Registry,
        base_source: str | Path,
        tokenizer,
        device: str = "cpu",
        load_in_4bit: bool = False,
        dtype=None,
        batch_size: int = 8,
    ) -> None:
        self.registry = registry
        self.base_source = str(base_source)
        self.tokenizer = tokenizer
        self.device = device
        self.load_in_4bit = load_in_4bit
        self.dtype = dtype
        self.batch_size = batch_size
        self._model = None  # a PeftModel over the sequence-classification base, one adapter per version
        self._loaded: OrderedDict[str, None] = OrderedDict()  # adapter names, least recently used first
        # version -> its reward model's (version, folder): published versions never change, so the
        # answer path reads the registry once per version, not once per answer.
        self._sources: dict[str, tuple[str, Path] | None] = {}
        self._lock = threading.Lock()

    def score(self, version: str, question: str, system_prompt: str | None, candidates: list[str]) -> tuple[str, list[float]] | None:
        """Each candidate's reward, as (the reward model's version, scores); None without a reward model.

        Args:
            version: the version that wrote the candidates.
            question: the question as stored (redacted), put to the reward model through the chat
                template with ``system_prompt``, as in training.
            candidates: the answers, as stored.
        """
        from ..evaluation.reward_model import score_completions

        with self._lock:
            if version not in self._sources:
                self._sources[version] = self.registry.reward_source(version)
            found = self._sources[version]
            if found is None:
                return None
            source, path = found
            model = self._with_adapter(source, path)
            started = time.perf_counter()
            scores = score_completions(model, self.tokenizer, chat_prompt(question, system_prompt), candidates, self.batch_size)
        log.debug("scored %d candidates with %s's reward model in %.0f ms", len(candidates), source, 1e3 * (time.perf_counter() - started))
        return source, [round(float(s), 4) for s in scores]

    def _with_adapter(self, name: str, path: Path):
        """The model with ``name``'s reward adapter active, loading it (and the base, the first time)."""
        from peft import PeftModel

        from ..evaluation.reward_model import load_reward_base

        if self._model is None:
            started = time.perf_counter()
            base = load_reward_base(self.base_source, device=self.device, load_in_4bit=self.load_in_4bit, dtype=self.dtype)
            self._model = PeftModel.from_pretrained(base, str(path), adapter_name=name)
            self._model.eval()
            log.info("reward model of %s loaded in %.1f s", name, time.perf_counter() - started)
        elif name not in self._loaded:
            self._model.load_adapter(str(path), adapter_name=name)
        self._loaded[name] = None
        self._loaded.move_to_end(name)
        self._model.set_adapter(name)
        while len(self._loaded) > KEEP_ADAPTERS:
            oldest, _ = self._loaded.popitem(last=False)
            self._model.delete_adapter(oldest)
        return self._model
