"""Compiling a decode shape in a low-priority process that fills the compiler's disk cache.

A first compile of a decode shape takes 40-60 s of CPU on 2 cores (code generation, then a C++
compiler), and in the serving process it would take that CPU, and the interpreter lock, from the
answers. So the serving process hands the cold work to a child process at the lowest CPU priority
(``nice 19``), which builds the same serving copy from the base and compiles the same shape with
the same settings; Inductor's on-disk cache is shared, so the serving process then loads the
compiled shape in seconds (``compiled_decode``), giving way to answers while it does.

Run as ``python -m hitl_app.serving.precompile SPEC_JSON BUCKET ROWS``; the graph depends on the
shapes and the model's architecture, not on its weights, so the base stands in for any version.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ..feedback.records import Sampling

log = logging.getLogger(__name__)

NICENESS = 19  # the lowest CPU priority: the child runs only on cores that answers leave idle
_STDERR_TAIL = 2000
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding hitl_app/


class PrecompileSpec(BaseModel):
    """What the child process needs to compile the serving process's graphs: the same model and
    the same ``generate`` arguments (``fast_serving.example_kwargs``)."""

    model_config = ConfigDict(frozen=True)

    base: str  # folder or hub id of the base model, as the app loaded it
    dtype: str  # the serving copy's dtype, e.g. "bfloat16"
    system_prompt: str | None
    sampling: Sampling
    question: str


def precompile_shape(spec: PrecompileSpec, shape: tuple[int, int], timeout_s: float = 1800.0) -> float:
    """Compile ``shape`` (cache length, rows) in a child process at ``nice 19``; returns its seconds.

    The child shares this process's environment, so the same Inductor cache directory.

    Raises:
        RuntimeError: the child failed or ran past ``timeout_s``; the message ends with its stderr.
    """
    started = time.perf_counter()
    command = [sys.executable, "-m", __name__, spec.model_dump_json(), str(shape[0]), str(shape[1])]
    # The child imports this package from wherever this process did, whatever its working folder.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"compiling {shape[0]} x {shape[1]} in the background ran past {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or "").strip()[-_STDERR_TAIL:]
        raise RuntimeError(f"compiling {shape[0]} x {shape[1]} in the background failed ({done.returncode}): {tail}")
    return time.perf_counter() - started


def _main(argv: list[str]) -> int:
    """The child: build the serving copy of the base and compile one shape into the disk cache."""
    os.nice(NICENESS)
    import threading

    import torch

    from .base_model import LoadOptions, load_base, load_tokenizer
    from .fast_serving import example_kwargs
    from .fastpath import MergedServingCopy

    spec = PrecompileSpec.model_validate_json(argv[0])
    shape = (int(argv[1]), int(argv[2]))
    logging.basicConfig(level=logging.WARNING)
    tokenizer = load_tokenizer(spec.base)
    base = load_base(spec.base, LoadOptions(device="cpu"))
    fast = MergedServingCopy(base, getattr(torch, spec.dtype))
    context = int(getattr(base.config, "max_position_embeddings", 2048))
    kwargs = example_kwargs(tokenizer, spec.question, spec.system_prompt, spec.sampling, context, threading.Event())
    decoder = fast.compile_decoding([shape[0]], [shape[1]])
    decoder.compile_shape(shape, kwargs)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
