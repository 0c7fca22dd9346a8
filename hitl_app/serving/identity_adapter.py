"""A LoRA adapter that changes nothing (every weight zero), of the app's LoRA shape.

The vLLM backend answers for ``base`` through it rather than through vLLM's plain base model:
vLLM's CPU build (0.32) applies another request's LoRA to base-model requests that share a batch
with adapter requests, while requests that all name an adapter are kept apart. With every request
naming an adapter, an answer tagged ``base`` is the base's answer. B = 0 makes the LoRA term
exactly zero, so the answers are the base model's.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..core.files import fsync_dir

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def write_identity_adapter(base: str, lora_config, folder: Path) -> Path:
    """Write the zero adapter for ``base`` with ``lora_config``'s shape into ``folder``; returns ``folder``.

    The base is built on the meta device from its config, so no weights are read, whatever its
    size. A folder written for the same base and LoRA config is kept as it is.
    """
    import copy

    import torch
    from accelerate import init_empty_weights
    from peft import get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = copy.deepcopy(lora_config)
    config.base_model_name_or_path = base
    staging = folder.with_name(folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    config.save_pretrained(str(staging))
    written = (staging / ADAPTER_CONFIG).read_text(encoding="utf-8")
    if (folder / WEIGHTS).is_file() and (folder / ADAPTER_CONFIG).read_text(encoding="utf-8") == written:
        shutil.rmtree(staging)
        return folder
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    shapes = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(get_peft_model(model, config)).items()}
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(staging / WEIGHTS))
    with open(staging / WEIGHTS, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(staging)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(staging, folder)
    fsync_dir(folder.parent)
    log.info("wrote the identity LoRA adapter (%d tensors) to %s", len(shapes), folder)
    return folder
