"""R2: the app process killed with SIGKILL, during writes and during a retrain.

The app runs as its own OS process (``main.py`` on the tiny model), as in production, so a kill
is a real kill: no ``finally`` runs, no buffer is flushed, and the trainer it started is
orphaned. Clients mark every write with a unique text, so after the kills the store can be
checked write by write: every acknowledged record is present exactly once, and a write that is
missing was the one each client had in flight when the app died.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import Feedback, Generation
from hitl_app.feedback.store import FeedbackStore
from hitl_app.training.status import STATUS_FILE
from tests.helpers import REPO, api_client, free_port, wait_for

log = logging.getLogger(__name__)

ADMIN = ("admin", "admin-pw")
WRITERS = [(f"dr{i}", f"pw-{i}") for i in range(3)]
KILLS = 20
START_TIMEOUT_S = 180.0


class AppProcess:
    """``python main.py`` on the tiny model under ``root``: started, killed and restarted by a test."""

    def __init__(self, root: Path, tiny_base: Path, *args: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = [
            "--base-model", str(tiny_base), "--feedback-dir", str(root / "feedback"),
            "--checkpoints-dir", str(root / "checkpoints"), "--port", str(self.port), "--device", "cpu",
            "--max-new-tokens", "6", "--temperature", "0", "--candidates", "1", "--holdout-fraction", "0",
            "--lora-r", "4", "--lora-alpha", "8", "--max-seq-length", "256", "--learning-rate", "5e-3",
            "--no-redact-phi", "--no-compile-decode", "--auth", f"{ADMIN[0]}:{ADMIN[1]}:admin",
            *[arg for user, pw in WRITERS for arg in ("--auth", f"{user}:{pw}")],
            *args,
        ]
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the app and wait until it serves its login page."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        self.starts += 1
        with open(self.root / f"app-{self.starts:02d}.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "main.py"), *self.args], cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited with {self.proc.returncode} on start {self.starts}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the app did not come up within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def trainer_pids(self) -> list[int]:
        """The app's spawned trainer processes (not multiprocessing's resource tracker)."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    pids.append(int(pid))
        return pids

    def kill(self) -> None:
        """SIGKILL the app process: nothing of it runs after this."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        return (self.root / f"app-{self.starts:02d}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def processes():
    """Apps started by a test; any still running at the end is killed."""
    started: list[AppProcess] = []
    yield started
    for app in started:
        if app.proc is not None and app.proc.poll() is None:
            app.kill()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False



@dataclass
class Writes:
    """What one client sent in one life of the app: markers acknowledged, and the one in flight."""

    acknowledged: list[str] = field(default_factory=list)
    in_flight: str | None = None
    error: str | None = None


def _write_until_killed(url: str, login: tuple[str, str], life: int, writes: Writes, first_ack: threading.Event) -> None:
    """Log in, then ask, edit and reject until the app dies; every write carries a unique marker."""
    try:
        client = api_client(url, login)
    except Exception:  # the app was killed before this client had logged in: it wrote nothing
        return
    user = login[0]
    generation_id = None
    i = 0
    while True:
        marker = f"m{life:02d}x{user}x{i:04d}"
        writes.in_flight = marker
        try:
            if generation_id is None or i % 3 == 0:
                generation_id = client.predict(f"Question {marker}?", api_name="/ask")["generation_id"]
            elif i % 3 == 1:
                assert client.predict(generation_id, f"Answer {marker}.", api_name="/edit")["saved"]
            else:
                assert client.predict(generation_id, f"Wrong {marker}", api_name="/reject")["saved"]
        except AssertionError as exc:
            writes.error = f"{marker}: {exc}"
            return
        except Exception:  # the app was killed under this request: it stays the one in flight
            return
        writes.acknowledged.append(marker)
        writes.in_flight = None
        first_ack.set()
        i += 1


def _stored_markers(root: Path) -> tuple[list[str], int]:
    """The marker of every record in the store, and how many lines were skipped as torn."""
    result = FeedbackStore(root / "feedback").read()
    markers = []
    for _, record in result.records:
        if isinstance(record, Generation):
            text = record.prompt
        elif isinstance(record, Feedback):
            text = record.text or record.reason or ""
        else:
            continue
        markers += [word.strip("?.") for word in text.split() if word.startswith("m") and "x" in word]
    return markers, len(result.corrupt)


@pytest.mark.stress
def test_r2_sigkill_during_writes_loses_no_acknowledged_record(tmp_path: Path, tiny_base: Path, processes) -> None:
    app = AppProcess(tmp_path, tiny_base, "--no-auto-retrain")
    processes.append(app)
    rng = random.Random(20261123)
    lives: list[dict[str, Writes]] = []
    for life in range(KILLS):
        app.start()  # every restart loads, whatever the last kill left in the store
        writes = {user: Writes() for user, _ in WRITERS}
        first_ack = threading.Event()
        threads = [
            threading.Thread(target=_write_until_killed, args=(app.url, login, life, writes[login[0]], first_ack), daemon=True)
            for login in WRITERS
        ]
        for t in threads:
            t.start()
        assert first_ack.wait(60), app.log_tail()
        time.sleep(rng.uniform(0.05, 1.5))  # a random moment while the clients write
        app.kill()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client hung after the app was killed"
        assert not [w.error for w in writes.values() if w.error]
        lives.append(writes)

    app.start()  # the twentieth restart, on what the twentieth kill left
    status = api_client(app.url, ADMIN).predict(api_name="/status")
    app.kill()

    stored, torn = _stored_markers(tmp_path)
    acknowledged = [m for writes in lives for w in writes.values() for m in w.acknowledged]
    in_flight = {w.in_flight for writes in lives for w in writes.values() if w.in_flight}
    log.info(
        "R2: %d kills, %d acknowledged writes, %d in flight at a kill (%d of them stored), %d torn lines",
        KILLS, len(acknowledged), len(in_flight), len(in_flight & set(stored)), torn,
    )
    assert len(acknowledged) >= KILLS * len(WRITERS)
    duplicated = {m for m in stored if stored.count(m) > 1}
    assert not duplicated, sorted(duplicated)[:5]
    missing = set(acknowledged) - set(stored)
    assert not missing, sorted(missing)[:5]
    # Only writes that were in flight at a kill may be missing, and nothing unknown appears.
    assert set(stored) <= set(acknowledged) | in_flight
    assert torn <= KILLS and status["corrupt_lines"] == torn
    assert status["feedback_total"] > 0


def _status_file(app: AppProcess) -> dict:
    try:
        return json.loads((app.root / "checkpoints" / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _training_past(app: AppProcess, progress: float) -> bool:
    status = _status_file(app)
    return status.get("state") == "training" and status.get("progress", 0) >= progress


def _assert_only_complete_versions(root: Path) -> list[str]:
    registry = Registry(root / "checkpoints")
    versions = registry.versions()
    for version in versions:
        assert registry.manifest(version).version == version
        assert (registry.adapter_dir(version) / "adapter_model.safetensors").is_file()
    active = registry.active().version
    assert active == "base" or active in versions
    return versions


@pytest.mark.stress
def test_r2_sigkill_during_a_retrain_publishes_nothing_half_written(tmp_path: Path, tiny_base: Path, processes) -> None:
    app = AppProcess(tmp_path, tiny_base, "--no-auto-retrain", "--gate", "off")
    processes.append(app)
    app.start()
    clinician = api_client(app.url, WRITERS[0])
    for i in range(6):
        gen = clinician.predict(f"What is the first-line treatment for hypertension? ({i})", api_name="/ask")
        clinician.predict(gen["generation_id"], "Start a thiazide or an ACE inhibitor.", api_name="/edit")

    # 1. The app dies mid-round: its trainer follows it, and nothing half-written is listed.
    assert api_client(app.url, ADMIN).predict(api_name="/retrain")["queued"]
    wait_for(lambda: _training_past(app, 0.05))
    trainers = app.trainer_pids()
    assert len(trainers) == 1
    app.kill()
    wait_for(lambda: not _alive(trainers[0]), timeout_s=30)  # an orphan would publish behind the next app's back
    assert _assert_only_complete_versions(tmp_path) == []

    app.start()
    assert not list((tmp_path / "checkpoints").glob(".staging-*"))  # cleaned at start-up
    # Logins do not outlive the app process: both log in again.
    admin, clinician = api_client(app.url, ADMIN), api_client(app.url, WRITERS[0])
    status = admin.predict(api_name="/status")
    assert status["versions"] == ["base"] and status["serving_version"] == "base"
    assert status["trainer"]["state"] == "failed" and "interrupted" in status["trainer"]["last_error"]

    # 2. The trainer alone is killed mid-round: the app serves on and shows the failure.
    assert admin.predict(api_name="/retrain")["queued"]
    wait_for(lambda: _training_past(app, 0.3))
    os.kill(app.trainer_pids()[0], signal.SIGKILL)
    status = wait_for(lambda: (s := admin.predict(api_name="/status"))["trainer"]["state"] == "failed" and s)
    assert "killed" in status["trainer"]["last_error"]
    assert status["versions"] == ["base"] and _assert_only_complete_versions(tmp_path) == []
    assert clinician.predict("What is asthma?", api_name="/ask")["version"] == "base"

    # 3. The next trigger retrains, and the new version is complete and served.
    assert admin.predict(api_name="/retrain")["queued"]
    status = wait_for(lambda: (s := admin.predict(api_name="/status"))["trainer"]["state"] != "training" and s, timeout_s=300)
    assert status["trainer"]["state"] == "idle", status["trainer"]
    status = wait_for(lambda: (s := admin.predict(api_name="/status"))["serving_version"] == "v0001" and s)
    assert _assert_only_complete_versions(tmp_path) == ["v0001"] == status["versions"][1:]
    assert clinician.predict("What is asthma?", api_name="/ask")["version"] == "v0001"
    outcomes = [r.outcome for r in Registry(tmp_path / "checkpoints").rounds()]
    assert outcomes == ["failed", "failed", "published"]
