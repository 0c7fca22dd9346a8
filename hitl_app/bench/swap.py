"""Benchmark ``swap``: publish-to-serving time of a hot swap, against a full reload of the adapter.

"Publish to serving" runs from ``registry.set_active(version)`` until ``models.version`` equals
it, so it includes the ACTIVE write, the watcher's poll delay (0-50 ms), reading the adapter and
the swap under the lock. Swaps alternate between two published versions. A logits check then
confirms the swapped model serves the same weights as a fresh load of the adapter.
"""

from __future__ import annotations

import inspect
import logging
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapters import publish_random_adapters, publish_trained_adapters
from .plan import QUESTION, BenchConfig
from .figures import ratio, summarise
from .timing import METER, wait_for
from .workspace import make_settings, serving

if TYPE_CHECKING:
    from ..serving.manager import ModelManager

log = logging.getLogger(__name__)


@dataclass
class Activation:
    """One ``ModelManager.activate`` call: the version, lock time and total time (with reading)."""

    version: str
    lock_held_s: float
    total_s: float


def record_activations(models: "ModelManager") -> list[Activation]:
    """Record every activation of ``models``, including those the ACTIVE watcher makes.

    The watcher discards ``activate``'s return value (the seconds the lock was held), so the
    bound method is shadowed on this one instance; ``sync`` calls ``self.activate`` and so goes
    through the wrapper. Nothing in the module is changed.
    """
    records: list[Activation] = []
    original = models.activate

    def activate(version: str) -> float:
        started = time.perf_counter()
        held = original(version)
        records.append(Activation(version, held, time.perf_counter() - started))
        return held

    models.activate = activate  # type: ignore[method-assign]
    return records


def logits_check(models: "ModelManager", reloaded, prompt: str) -> dict[str, float]:
    """Compare the hot-swapped model's logits with a fresh load of the same adapter.

    A fast swap only counts if it serves the right weights: the difference to the reloaded model
    should be ~0, and clearly smaller than the adapter's own effect (adapter on vs off).
    """
    import torch

    inputs = models.encode(prompt)
    with torch.inference_mode():
        served = models.model(**inputs).logits
        fresh = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            plain = reloaded(**inputs).logits
    return {
        "max_abs_logit_diff_swapped_vs_reloaded": float((served - fresh).abs().max()),
        "max_abs_logit_diff_adapter_vs_base": float((fresh - plain).abs().max()),
    }


def _timed_swaps(
    models: "ModelManager", activations: list[Activation], versions: list[str], count: int, interval_s: float
) -> list[dict[str, Any]]:
    """Publish ``count`` swaps, alternating between ``versions``; time each until it is served."""
    # The watcher restarts its cycle (interval_s) after each swap, so a fixed pause would publish
    # at the same point of every cycle (a fixed 0.2 s always landed just after a poll: ~95 ms each
    # time). A pause jittered over one interval publishes at a uniformly random phase, as the
    # trainer does.
    rng = random.Random(0)
    samples: list[dict[str, Any]] = []
    for i in range(count):
        target = versions[i % 2]  # the manager starts on versions[-1], so every step swaps
        time.sleep(0.2 + rng.uniform(0.0, interval_s))
        seen = len(activations)
        t0 = time.perf_counter()
        models.registry.set_active(target, by="bench", reason="swap benchmark")
        t_written = time.perf_counter()
        wait_for(lambda: models.version == target, 30.0, f"{target} to be served")
        t_serving = time.perf_counter()
        # models.version flips inside the lock, a moment before activate() returns.
        wait_for(lambda: len(activations) > seen, 5.0, "the activation record")
        act = activations[-1]
        samples.append({
            "version": target,
            "publish_to_serving_s": t_serving - t0,
            "set_active_s": t_written - t0,
            "activate_s": act.total_s,
            "lock_held_s": act.lock_held_s,
        })
        log.info(
            "swap %d/%d to %s: serving after %.1f ms (lock held %.2f ms, activate %.1f ms)",
            i + 1, count, target, (t_serving - t0) * 1e3, act.lock_held_s * 1e3, act.total_s * 1e3,
        )
    return samples


def bench_swap(cfg: BenchConfig, base: Path, tokenizer, root: Path) -> dict[str, Any]:
    """Benchmark ``swap`` (see the module docstring), in its own workspace under ``root``."""
    import gc

    import torch
    from peft import PeftModel

    from ..serving.base_model import LoadOptions, load_base

    settings = make_settings(root, base, cfg)
    started = time.perf_counter()
    if cfg.trained_adapters:
        log.info("swap: training two adapters in-process (%d judgements per round)", cfg.adapter_judgements)
        versions = publish_trained_adapters(settings, base, tokenizer, cfg.adapter_judgements)
    else:
        log.info("swap: publishing two random adapters of the app's LoRA shape")
        versions = publish_random_adapters(settings, base)
    setup_s = time.perf_counter() - started
    log.info("swap: published %s in %.1f s; building the serving model", versions, setup_s)

    with serving(settings, base, tokenizer, watch=False) as models:
        activations = record_activations(models)  # before the watcher starts, so it records every swap
        models.watch()
        # The watcher's poll interval: the default of ModelManager.watch, which the app uses.
        interval_s = inspect.signature(type(models).watch).parameters["interval_s"].default
        since = METER.reading()
        samples = _timed_swaps(models, activations, versions, cfg.swaps, interval_s)
        served = models.version
        options = LoadOptions(device=settings.resolved_device(), load_in_4bit=settings.load_in_4bit)
        adapter = str(models.registry.adapter_dir(served))
        reloads: list[float] = []
        reloaded = None
        for i in range(cfg.reloads):
            reloaded = None  # free the previous copy before timing the next load
            gc.collect()
            t0 = time.perf_counter()
            reloaded = PeftModel.from_pretrained(load_base(str(base), options), adapter)
            reloads.append(time.perf_counter() - t0)
            log.info("reload %d/%d of %s: %.2f s", i + 1, cfg.reloads, served, reloads[-1])
        check = logits_check(models, reloaded, QUESTION)
        log.info(
            "swap check: max |logit diff| swapped vs reloaded %.2e (adapter's own effect %.2e)",
            check["max_abs_logit_diff_swapped_vs_reloaded"], check["max_abs_logit_diff_adapter_vs_base"],
        )
        del reloaded
    foreign = METER.foreign_cores(since)

    swap_s = statistics.median(s["publish_to_serving_s"] for s in samples)
    reload_s = statistics.median(reloads)
    return {
        "versions": versions,
        "adapters": "trained (RoundRunner)" if cfg.trained_adapters else "random (get_peft_model)",
        "adapter_setup_s": setup_s,
        "torch_threads": torch.get_num_threads(),
        "publish_to_serving": summarise([s["publish_to_serving_s"] for s in samples]),
        "lock_held": summarise([s["lock_held_s"] for s in samples]),
        "activate_total": summarise([s["activate_s"] for s in samples]),
        "set_active": summarise([s["set_active_s"] for s in samples]),
        "reload": summarise(reloads),
        "median_swap_s": swap_s,
        "median_lock_held_s": statistics.median(s["lock_held_s"] for s in samples),
        "median_reload_s": reload_s,
        "speedup_reload_over_swap": ratio(reload_s, swap_s),
        "check": check,
        "watch_interval_s": interval_s,
        "foreign_cpu_cores": foreign,
        "samples": samples,
        "reload_samples_s": reloads,
    }
