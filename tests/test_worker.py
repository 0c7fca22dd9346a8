"""TrainerClient: the trainer as a real spawned OS process, its status file, and its failures.

Faults are injected through ``HITL_TRAINER_FAULT``, which the spawned child reads from the
environment it inherits at start: ``exception`` raises, ``oom`` raises torch's OutOfMemoryError,
``kill`` SIGKILLs the child mid-round.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling
from hitl_app.versions.manifest import TrainerStatus
from hitl_app.feedback.store import FeedbackStore
from hitl_app.training.process import TrainerClient
from hitl_app.training.faults import FAULT_ENV
from hitl_app.training.status import StatusFile

ROUND_TIMEOUT_S = 120
QA = [
    ("What is the first-line treatment for hypertension in adults?", "A thiazide diuretic or an ACE inhibitor."),
    ("How much paracetamol may an adult take?", "Paracetamol 500 mg every 6 hours, at most 4 g a day."),
    ("How is asthma treated?", "Asthma is treated with inhaled corticosteroids and a reliever inhaler."),
]


def judge_all(settings, action: str = "accept") -> list[Feedback]:
    """Record one generation and one judgement per QA pair, as the service does."""
    store = FeedbackStore(settings.feedback_dir)
    feedback = []
    for question, answer in QA:
        gen = Generation(
            reviewer="dr-a",
            prompt=question,
            candidates=[answer],
            version=BASE_VERSION,
            sampling=Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8),
            prompt_tokens=12,
        )
        store.append(gen)
        extra = {"reason": "wrong"} if action == "reject" else {}
        fb = Feedback(reviewer="dr-a", generation_id=gen.id, action=action, **extra)
        store.append(fb)
        feedback.append(fb)
    return feedback


def wait_for_round(client: TrainerClient, timeout_s: float = ROUND_TIMEOUT_S) -> TrainerStatus:
    """Poll the client's status until the round is no longer 'training'."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.status()
        if status.state != "training":
            return status
        time.sleep(0.1)
    pytest.fail(f"the round did not finish in {timeout_s} s; last status: {client.status()}")


@pytest.fixture
def settings(make_settings):
    settings = make_settings(num_epochs=1, candidates=1)
    Registry(settings.checkpoints_dir)  # as the app does before it starts the trainer: creates the folder
    return settings


@pytest.fixture
def clients():
    """Makes TrainerClients and always stops them (and their processes) afterwards."""
    made: list[TrainerClient] = []

    def make(settings, base: Path) -> TrainerClient:
        client = TrainerClient(settings, str(base))
        made.append(client)
        return client

    yield make
    for client in made:
        proc = client._proc
        client.stop(timeout_s=10)
        if proc is not None:
            assert not proc.is_alive(), "the trainer process outlived stop()"


def test_round_in_the_trainer_process(settings, tiny_base: Path, clients) -> None:
    feedback = judge_all(settings)
    client = clients(settings, tiny_base)
    assert client.status().state == "idle"

    assert client.request("admin") is True
    assert client.busy()
    assert client.request("auto") is False  # one round at a time
    proc = client._proc
    assert proc is not None and proc.is_alive() and proc.pid != os.getpid()

    status = wait_for_round(client)
    assert status.state == "idle", status.last_error
    assert status.last_error is None
    assert status.last_version == "v0001"
    assert status.progress == 1.0
    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == ["v0001"]
    assert registry.active().version == "v0001"
    manifest = registry.manifest("v0001")
    assert manifest.config["requested_by"] == "admin"
    assert manifest.record_ids == [fb.id for fb in feedback]
    assert proc.is_alive()  # the process stays up for the next round

    # a second request with nothing new: the same process answers, nothing is published
    assert client.request("admin") is True
    status = wait_for_round(client)
    assert status.state == "idle" and "nothing to train" in status.message
    assert client._proc is proc
    assert registry.versions() == ["v0001"]
    # Both rounds are in the round log, the dashboard's retrain timeline.
    rounds = registry.rounds()
    assert [(r.outcome, r.version, r.requested_by) for r in rounds] == [
        ("published", "v0001", "admin"),
        ("nothing_to_train", None, "admin"),
    ]
    assert rounds[0].duration_s > 0 and rounds[0].started_at <= rounds[1].started_at
    assert "nothing to train" in rounds[1].detail

    client.stop(timeout_s=30)
    assert not proc.is_alive()
    assert proc.exitcode == 0  # it left its loop on the None job, not by terminate()
    assert client._proc is None
    client.stop()  # stopping twice is harmless


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("exception", "RuntimeError: injected trainer fault"),
        ("oom", "OutOfMemoryError"),
        ("kill", "trainer process killed (exit code -9)"),
    ],
)
def test_failed_round_publishes_nothing_and_the_next_retries(
    settings, tiny_base: Path, clients, monkeypatch: pytest.MonkeyPatch, fault: str, error: str
) -> None:
    judge_all(settings)
    monkeypatch.setenv(FAULT_ENV, fault)  # the spawned child inherits it
    client = clients(settings, tiny_base)
    assert client.request("auto") is True

    status = wait_for_round(client)
    assert status.state == "failed"
    assert error in (status.last_error or "")
    assert StatusFile(settings.checkpoints_dir).read().state == "failed"  # persisted, not only reported
    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == []
    assert registry.active().version == BASE_VERSION
    assert list(settings.checkpoints_dir.glob(".staging-*")) == []
    proc = client._proc
    if fault == "kill":
        assert not proc.is_alive() and proc.exitcode == -9
    else:
        assert proc.is_alive()  # an error in a round does not take the trainer process down
        client.stop()  # its environment still carries the fault; the next request starts a fresh process

    monkeypatch.delenv(FAULT_ENV)
    assert client.request("auto") is True  # the next trigger retries
    assert client._proc is not proc and client._proc.is_alive()
    status = wait_for_round(client)
    assert status.state == "idle", status.last_error
    assert status.last_error is None
    assert status.last_version == "v0001"
    assert registry.versions() == ["v0001"]
    assert registry.active().version == "v0001"
    failed, published = registry.rounds()
    assert (failed.outcome, failed.version, failed.requested_by) == ("failed", None, "auto")
    assert error in failed.detail
    assert (published.outcome, published.version) == ("published", "v0001")


def test_round_interrupted_by_an_app_restart_is_marked_failed(settings, tiny_base: Path, clients) -> None:
    status_file = StatusFile(settings.checkpoints_dir)
    status_file.write(state="training", progress=0.4, message="SFT: step 2/5")

    client = clients(settings, tiny_base)
    status = client.status()
    assert status.state == "failed"
    assert "interrupted" in status.last_error
    assert status_file.read().state == "failed"
    [lost] = Registry(settings.checkpoints_dir).rounds()
    assert lost.outcome == "failed" and "interrupted" in lost.detail
    assert client._proc is None  # nothing was started by reading the status
    assert not client.busy()


@pytest.mark.parametrize("state", ["idle", "failed"])
def test_other_states_survive_a_restart(settings, tiny_base: Path, clients, state: str) -> None:
    StatusFile(settings.checkpoints_dir).write(state=state, message="before the restart", last_error=None)
    status = clients(settings, tiny_base).status()
    assert status.state == state
    assert status.message == "before the restart"
    assert status.last_error is None


def test_unreadable_status_file_reads_as_failed(settings, tiny_base: Path, clients) -> None:
    path = settings.checkpoints_dir / "trainer_status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json", encoding="utf-8")
    status = clients(settings, tiny_base).status()
    assert status.state == "failed"
    assert "unreadable status file" in status.last_error


# ----- rounds with a preference stage, in-process -----
def record(settings, candidates: list[str], **judgement) -> Feedback:
    """Record a generation with ``candidates`` and one judgement of it."""
    store = FeedbackStore(settings.feedback_dir)
    gen = Generation(
        reviewer="dr-a",
        prompt="How is asthma treated?",
        candidates=candidates,
        version=BASE_VERSION,
        sampling=Sampling(do_sample=True, temperature=0.7, top_p=1.0, max_new_tokens=8),
        prompt_tokens=12,
    )
    store.append(gen)
    fb = Feedback(reviewer="dr-a", generation_id=gen.id, **judgement)
    store.append(fb)
    return fb


CANDIDATES = ["Inhaled corticosteroids and a reliever.", "Antibiotics.", "Rest only."]


@pytest.mark.parametrize(
    ("train_method", "judgements", "method", "sft_rows", "pref_rows"),
    [
        ("auto", [dict(action="rank", ranking=[[0], [1], [2]])], "dpo", 0, 3),
        ("auto", [dict(action="rank", ranking=[[0], [1, 2]])], "dpo", 0, 2),
        ("auto", [dict(action="edit", candidate=1, text="Inhaled steroids.")], "dpo", 1, 1),
        ("auto", [dict(action="rank", ranking=[])], "kto", 0, 3),
        ("auto", [dict(action="reject", reason="wrong"), dict(action="accept", candidate=1)], "kto", 1, 2),
        ("kto", [dict(action="edit", candidate=1, text="Inhaled steroids.")], None, 1, 0),
        ("sft", [dict(action="edit", candidate=1, text="Inhaled steroids.")], None, 1, 0),
    ],
)
def test_round_runs_the_preference_stage_its_rows_call_for(
    make_settings, tiny_base: Path, train_method, judgements, method, sft_rows, pref_rows
) -> None:
    import math

    from hitl_app.training.round import RoundRunner

    settings = make_settings(train_method=train_method, candidates=3, temperature=0.7)
    Registry(settings.checkpoints_dir)
    feedback = [record(settings, CANDIDATES, **j) for j in judgements]
    version = RoundRunner(settings, str(tiny_base)).run("admin")

    assert version == "v0001"
    manifest = Registry(settings.checkpoints_dir).manifest(version)
    assert manifest.record_ids == [fb.id for fb in feedback]
    assert manifest.config["train_method"] == train_method
    metrics = manifest.metrics
    assert metrics.rows["sft"] == sft_rows
    assert (metrics.train_loss_after is not None) == (sft_rows > 0)
    pref = metrics.preference
    if method is None:
        assert pref is None
        return
    made = metrics.rows["dpo"] if method == "dpo" else metrics.rows["kto_desirable"] + metrics.rows["kto_undesirable"]
    assert pref.method == method and pref.rows == pref_rows == made and pref.steps >= 1
    # A round runs no evaluation pass inside TRL: the figures are its training steps' means.
    assert pref.figures_from == "training steps" and pref.loss_after is None and pref.trl_metrics == {}
    figures = [pref.loss, pref.kl]
    if method == "dpo":  # KTO reports no accuracy, and a margin only when it has both labels
        figures += [pref.reward_accuracy, pref.reward_margin]
    assert all(f is not None and math.isfinite(f) for f in figures), pref
    assert pref.train_metrics and all(math.isfinite(v) for v in pref.train_metrics.values())


def test_a_round_with_rows_for_no_stage_publishes_nothing(make_settings, tiny_base: Path) -> None:
    from hitl_app.training.round import RoundRunner

    # One reject is a single KTO label: too few for KTO, and no SFT row.
    settings = make_settings(candidates=3, temperature=0.7)
    Registry(settings.checkpoints_dir)
    record(settings, CANDIDATES, action="reject", reason="wrong")
    runner = RoundRunner(settings, str(tiny_base))
    assert runner.run("admin") is None
    assert "nothing to train" in runner.status.read().message
    assert Registry(settings.checkpoints_dir).versions() == []
