"""The layers in pyproject.toml hold: a module imports only from layers below its own, the UI
reaches the model, the trainer and the stores only through the service, and nothing in the app
imports the benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def test_the_layers_hold():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "3 kept" in done.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "hitl_app", tmp_path / "hitl_app", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_an_import_from_a_higher_layer_breaks_the_suite(tmp_path):
    root = _copy(tmp_path)
    errors = root / "hitl_app" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom ..service.service import HITLService  # noqa\n")
    done = _lint(root)
    assert done.returncode != 0
    assert "The app's layers BROKEN" in done.stdout
    assert "hitl_app.core.errors -> hitl_app.service.service" in done.stdout


def test_the_app_importing_a_benchmark_breaks_the_suite(tmp_path):
    root = _copy(tmp_path)
    app = root / "hitl_app" / "app.py"
    app.write_text(app.read_text() + "\nfrom .bench import timing  # noqa\n")
    done = _lint(root)
    assert done.returncode != 0
    assert "outside the app's import graph BROKEN" in done.stdout


def test_the_ui_reaching_past_the_service_breaks_the_suite(tmp_path):
    root = _copy(tmp_path)
    review = root / "hitl_app" / "ui" / "review.py"
    review.write_text(review.read_text() + "\nfrom ..serving.manager import ModelManager  # noqa\n")
    done = _lint(root)
    assert done.returncode != 0
    assert "only through the service BROKEN" in done.stdout
    assert "hitl_app.ui.review -> hitl_app.serving.manager" in done.stdout
