"""What the app writes to its console: its own log lines at ``--log-level``, and little else.

Third-party libraries fill a console with progress bars (``datasets``, the hub, TRL's log dicts)
and deprecation warnings that a clinical team cannot act on; a real problem would drown in them.
The app and the trainer process call ``configure`` first thing, before those libraries load.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Literal

LogLevel = Literal["debug", "info", "warning", "error"]

# Warnings raised from inside these packages are about their own internals or future versions,
# not about anything an operator of this app can change.
THIRD_PARTY = ("transformers", "trl", "peft", "datasets", "gradio", "torch", "bitsandbytes", "accelerate", "huggingface_hub")
# Their loggers stay at WARNING at most, whatever ``--log-level`` is: their INFO is plumbing.
NOISY_LOGGERS = ("httpx", "urllib3", "datasets", "transformers", "trl", "peft", "accelerate", "gradio")
# bitsandbytes warns at start-up on every CPU that optional kernels are not installed; it is only
# used for 4-bit loading on CUDA, where its errors still show.
QUIET_LOGGERS = ("bitsandbytes",)


def configure(level: LogLevel = "info", process: str | None = None) -> None:
    """Set up logging at ``level`` and silence third-party progress bars and warnings.

    Args:
        level: the detail of the app's own log lines.
        process: a name shown in every line (``trainer`` for the trainer process).
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    prefix = f"{process} " if process else ""
    logging.basicConfig(level=level.upper(), format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    if level != "debug":
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    if level != "debug":
        for package in THIRD_PARTY:
            warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{package}(\.|$)")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=rf"{package}(\.|$)")
            warnings.filterwarnings("ignore", category=UserWarning, module=rf"{package}(\.|$)")
