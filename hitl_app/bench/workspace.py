"""The app as the benchmark builds it: settings for a temporary workspace, and a serving model.

Every benchmark works in its own folder under one temporary directory, so nothing but the
converted base model (``checkpoints/base``, which the app itself creates on first start) is
written under the real ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..core.config import Settings
from ..versions.registry import Registry
from ..feedback.records import Sampling
from .plan import BenchConfig

if TYPE_CHECKING:
    from ..serving.manager import ModelManager

log = logging.getLogger(__name__)


def make_settings(root: Path, base: Path, cfg: BenchConfig) -> Settings:
    """App settings for a workspace under ``root``: the app's defaults, the converted base.

    Only the trainer's thread count, the hold-out share and (if set) the KL probe prompts come
    from ``cfg`` (see ``BenchConfig``).
    """
    overrides = {} if cfg.eval_probe_prompts is None else {"eval_probe_prompts": cfg.eval_probe_prompts}
    return Settings(
        base_model=str(base),
        feedback_dir=root / "feedback",
        checkpoints_dir=root / "checkpoints",
        trainer_threads=cfg.trainer_threads,
        holdout_fraction=cfg.holdout_fraction,
        **overrides,
    )


def app_sampling(settings: Settings) -> Sampling:
    """The sampling the app would record with its generations (as in ``create_service``)."""
    return Sampling(
        do_sample=settings.temperature > 0,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
    )


def build_manager(settings: Settings, base: Path, tokenizer) -> "ModelManager":
    """A ModelManager built as ``app.create_service`` builds it (serving whatever ACTIVE names),
    with the fast path's merged copy when ``settings.serve_dtype`` resolves to one."""
    from ..serving.base_model import LoadOptions, load_base
    from ..serving.fastpath import resolve_serve_dtype
    from ..serving.manager import ModelManager
    from ..training.sft import TrainConfig

    registry = Registry(settings.checkpoints_dir)
    options = LoadOptions(device=settings.resolved_device(), load_in_4bit=settings.load_in_4bit)
    model = load_base(str(base), options)
    lora = TrainConfig.from_config(settings.training_config).lora_config()
    serve_dtype = resolve_serve_dtype(settings.serve_dtype, options.device, options.load_in_4bit)
    return ModelManager.wrap(
        model, tokenizer, registry, app_sampling(settings), settings.system_prompt or None, lora, serve_dtype
    )


@contextlib.contextmanager
def serving(settings: Settings, base: Path, tokenizer, watch: bool = True) -> Iterator["ModelManager"]:
    """A serving ``ModelManager`` for the block, following ACTIVE if ``watch``; closed afterwards.

    The model itself is freed with the caller's last reference: each benchmark holds it in a
    local, and ``__main__.run_step`` collects garbage after every benchmark, so two served models
    are never in memory at once.
    """
    models = build_manager(settings, base, tokenizer)
    if watch:
        models.watch()  # the app's watcher, polling ACTIVE every 50 ms
    try:
        yield models
    finally:
        models.close()
