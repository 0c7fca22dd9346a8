"""``python main.py import`` and ``python main.py export`` as a shell runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def main_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_import_then_export_from_the_command_line(tmp_path: Path) -> None:
    questions = tmp_path / "set.csv"
    questions.write_text("query,expected\nCan I run with shin splints?,Rest first.\nCan I run with shin splints?,x\n")
    data = ["--feedback-dir", str(tmp_path / "fb"), "--checkpoints-dir", str(tmp_path / "ck")]
    done = main_py("import", str(questions), "--question-column", "query", "--reference-column", "expected",
                   "--batch", "sports", *data, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imported 1 question(s) from set.csv as batch 'sports'; skipped 1 duplicate(s)" in done.stdout
    queued = [json.loads(line) for line in (tmp_path / "fb" / "queue.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in queued] == ["item", "batch"] and queued[0]["reference"] == "Rest first."

    again = main_py("import", str(questions), "--question-column", "query", *data, cwd=tmp_path)
    assert again.returncode == 2 and "already in the queue" in again.stderr

    missing = main_py("import", str(tmp_path / "nope.jsonl"), *data, cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    out = tmp_path / "export"
    exported = main_py("export", "--kind", "raw", "--out", str(out), *data, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "exported 0 raw row(s)" in exported.stdout
    assert (out / "README.md").exists() and (out / "data" / "train.parquet").exists()

    bad_kind = main_py("export", "--kind", "ppo", "--out", str(out), *data, cwd=tmp_path)
    assert bad_kind.returncode == 2 and "invalid choice" in bad_kind.stderr
