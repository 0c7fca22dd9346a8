"""Fixtures: the tiny base model, settings pointed at tmp_path, the embedded model, a running app.

Helpers (building the tiny model, starting an app, polling) are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import DEFAULT_AUTH, REPO, TINY_SETTINGS, build_tiny_base, start_app


_KINDS = ("slow", "stress", "browser", "distributed", "vllm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that is not slow, stress, browser, distributed or vllm as a unit test (``-m unit``)."""
    for item in items:
        if not any(item.get_closest_marker(kind) for kind in _KINDS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny base model (built once per session)."""
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model training: its steps are too small to share, and
    two threads on a busy two-core machine spend most of their time waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder with no HITL_* settings leaking in from the environment."""
    for key in list(os.environ):
        if key.startswith("HITL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path, tiny_base: Path):
    """Build Settings on the tiny model, with data under tmp_path; keyword arguments override."""
    from hitl_app.core.config import Settings

    def make(**overrides) -> Settings:
        values = {
            **TINY_SETTINGS,
            "base_model": str(tiny_base),
            "feedback_dir": tmp_path / "feedback",
            "checkpoints_dir": tmp_path / "checkpoints",
            "temperature": 0.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def embedded_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real embedded model: the repository's converted ``checkpoints/base`` when `make run` made
    one (read only), else converted once into a temporary folder. No fixture writes into the repository."""
    from hitl_app.serving.base_model import ensure_embedded_base, is_converted

    converted = REPO / "checkpoints" / "base"
    if is_converted(converted):
        return converted
    return ensure_embedded_base(tmp_path_factory.mktemp("embedded") / "base")


@pytest.fixture(scope="session")
def _embedded_figures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-eval-cache")


@pytest.fixture
def shared_base_figures(tmp_path: Path, _embedded_figures: Path):
    """The embedded base's figures on the shipped evaluation data, shared by the session's slow
    rounds as the app shares them between its own rounds (``evaluation.eval_cache``).

    ``tmp_path/checkpoints/.eval-cache`` starts with what earlier tests measured, and what this
    test measures is kept for later ones. A figure is read back only for an identical evaluation
    key, so a test's outcome does not depend on which test measured it first.
    """
    import shutil

    from hitl_app.evaluation.eval_cache import CACHE_DIR

    cache = tmp_path / "checkpoints" / CACHE_DIR
    shutil.copytree(_embedded_figures, cache, dirs_exist_ok=True)
    yield cache
    if cache.is_dir():
        shutil.copytree(cache, _embedded_figures, dirs_exist_ok=True)


@pytest.fixture
def embedded_settings(tmp_path: Path, embedded_base: Path, shared_base_figures: Path):
    """Build Settings on the embedded model for a slow round, with data under tmp_path and the
    base's evaluation figures shared (``shared_base_figures``); keyword arguments override."""
    from hitl_app.core.config import Settings

    def make(**overrides) -> Settings:
        values = {
            "base_model": str(embedded_base),
            "feedback_dir": tmp_path / "feedback",
            "checkpoints_dir": tmp_path / "checkpoints",
            "device": "cpu",
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture(scope="module")
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_base: Path):
    """The whole app (server, model manager, trainer process) on the tiny model, one per test module.

    A module configures it with module-level names: ``APP_OPTIONS`` (Settings overrides),
    ``APP_AUTH`` (logins, default an admin and a clinician) and ``APP_BASE`` (a function
    ``(root, tiny_base) -> base folder``, for a module that needs a prepared base).
    """
    module = request.module
    root = tmp_path_factory.mktemp(module.__name__.rsplit(".", 1)[-1])
    make_base = getattr(module, "APP_BASE", None)
    base = make_base(root, tiny_base) if make_base else tiny_base
    running = start_app(root, base, getattr(module, "APP_AUTH", DEFAULT_AUTH), **getattr(module, "APP_OPTIONS", {}))
    yield running
    running.close()
