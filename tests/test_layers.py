"""The layers in pyproject.toml hold: a module imports only from layers below its own, the UI
reaches the model, the trainer and the stores only through the service, and nothing in the app
imports the benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    ("module", "line", "broken", "edge"),
    [
        ("core/errors.py", "from ..service.service import HITLService", "The app's layers",
         "hitl_app.core.errors -> hitl_app.service.service"),
        ("ui/review.py", "from ..serving.manager import ModelManager",
         "The UI reaches the model, the trainer and the stores only through the service",
         "hitl_app.ui.review -> hitl_app.serving.manager"),
        ("app.py", "from .bench import timing", "The benchmarks are outside the app's import graph",
         "hitl_app.app -> hitl_app.bench.timing"),
    ],
    ids=["higher-layer", "ui-past-the-service", "app-imports-a-benchmark"],
)  # fmt: skip
def test_a_forbidden_import_breaks_the_suite(tmp_path: Path, module: str, line: str, broken: str, edge: str) -> None:
    root = _copy(tmp_path)
    path = root / "hitl_app" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = _lint(root)
    assert done.returncode != 0
    assert f"{broken} BROKEN" in done.stdout
    assert edge in done.stdout
