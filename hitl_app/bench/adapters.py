"""Published versions for the benchmarks to serve: trained by real rounds, or random of the same shape."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from ..core.config import Settings
from ..versions.registry import Registry
from ..versions.manifest import Manifest, RoundMetrics
from .judgements import write_judgements

log = logging.getLogger(__name__)


def publish_trained_adapters(settings: Settings, base: Path, tokenizer, judgements: int) -> list[str]:
    """Train two real rounds in this process (``RoundRunner``) and return the two versions.

    The second round continues from the first, as the app's rounds do, so both adapters have the
    app's LoRA shape and a swap between them takes the hot-swap path production takes.

    Raises:
        RuntimeError: a round had nothing to train on.
    """
    from ..training.round import RoundRunner

    runner = RoundRunner(settings, str(base))
    versions = []
    for round_no in range(2):
        write_judgements(settings, tokenizer, judgements, start=round_no * judgements)
        version = runner.run("bench")
        if version is None:
            raise RuntimeError("the adapter round had nothing to train on")
        versions.append(version)
    del runner
    gc.collect()
    return versions


def publish_random_adapters(settings: Settings, base: Path, count: int = 2, b_std: float = 0.02) -> list[str]:
    """Publish ``count`` adapters of the app's LoRA shape with random B matrices; activate the last.

    The fast alternative to training: ``get_peft_model`` + save into ``registry.staging_dir()`` +
    ``registry.publish()``. B is drawn from N(0, ``b_std``) because a fresh LoRA has B = 0, which
    would make the swap's logits check (adapter vs no adapter) vacuous. ``b_std=0`` keeps B = 0:
    a version whose LoRA layers still run on every token but answer exactly as the base does.
    """
    import torch
    from peft import get_peft_model

    from ..serving.base_model import LoadOptions, load_base
    from ..training.sft import TrainConfig

    registry = Registry(settings.checkpoints_dir)
    cfg = TrainConfig.from_config(settings.training_config)
    model = get_peft_model(load_base(str(base), LoadOptions(device=cfg.device)), cfg.lora_config())
    versions: list[str] = []
    for i in range(count):
        torch.manual_seed(settings.seed + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" not in name:
                    continue
                if b_std > 0:
                    param.normal_(0.0, b_std)
                else:
                    param.zero_()
        staging = registry.staging_dir()
        model.save_pretrained(str(staging))
        manifest = Manifest(
            version="pending",
            parent=versions[-1] if versions else "base",
            base_model=str(base),
            record_ids=[],
            store_cursor=0,
            config={**cfg.to_dict(), "synthetic": True},
            metrics=RoundMetrics(duration_s=0.0),
        )
        versions.append(registry.publish(staging, manifest))
    registry.set_active(versions[-1], by="bench", reason="synthetic adapters")
    del model
    gc.collect()
    return versions
