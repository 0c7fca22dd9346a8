"""R3: the trainer fails by exception, by kill and by out-of-memory while the app serves.

Through the running app: clinicians keep asking while an admin's retrain fails, every answer
comes from the version that was serving before, and the failure shows in /status and in the
status panel the UI refreshes. The fault is injected through ``HITL_TRAINER_FAULT``, which the
trainer process reads from the environment it was spawned with.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from gradio_client import Client

from hitl_app.ui.format import status_markdown
from hitl_app.training.faults import FAULT_ENV
from tests.helpers import ADMIN, CLINICIAN, api_client, wait_for

FAULTS = {
    "exception": "RuntimeError: injected trainer fault",
    "oom": "OutOfMemoryError: injected out-of-memory",
    "kill": "trainer process killed",
}


APP_OPTIONS = {"auto_retrain": False, "gate": "off"}



def _settled(status: dict) -> bool:
    """The round is over and the app serves what it left active (the watcher swaps within moments)."""
    trainer = status["trainer"]
    return trainer["state"] != "training" and (trainer["state"] != "idle" or status["serving_version"] == trainer["last_version"])


def _retrain_until_idle(admin: Client) -> dict:
    assert admin.predict(api_name="/retrain")["queued"]
    return wait_for(lambda: _settled(s := admin.predict(api_name="/status")) and s)


class Answers:
    """A clinician asking question after question in a thread, until stopped."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.versions.append(self.client.predict("What is asthma?", api_name="/ask")["version"])
            except Exception as exc:  # collected and asserted empty by the test
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> "Answers":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.mark.stress
def test_r3_serving_continues_through_trainer_failures(app, monkeypatch: pytest.MonkeyPatch) -> None:
    clinician, admin = api_client(app.url, CLINICIAN), api_client(app.url, ADMIN)
    for i in range(3):
        gen = clinician.predict(f"Signs of a stroke? ({i})", api_name="/ask")
        clinician.predict(gen["generation_id"], "Face drooping, arm weakness, speech difficulty: call 999.", api_name="/edit")
    status = _retrain_until_idle(admin)
    serving = status["serving_version"]
    assert serving == "v0001", status["trainer"]

    for fault, error in FAULTS.items():
        gen = clinician.predict(f"Fever in an infant under 3 months ({fault})?", api_name="/ask")
        clinician.predict(gen["generation_id"], "Needs same-day assessment: sepsis must be excluded.", api_name="/edit")
        monkeypatch.setenv(FAULT_ENV, fault)
        app.service.trainer.stop()  # the next request spawns a trainer that carries the fault
        with Answers(clinician) as answers:
            wait_for(lambda: answers.versions)
            status = _retrain_until_idle(admin)
            during = len(answers.versions)
            wait_for(lambda: len(answers.versions) > during)  # and after the failure
        assert not answers.errors, answers.errors[:3]
        assert set(answers.versions) == {serving}, answers.versions
        trainer = status["trainer"]
        assert trainer["state"] == "failed" and error in trainer["last_error"], (fault, trainer)
        assert status["serving_version"] == serving and status["versions"] == ["base", serving]
        panel = status_markdown(app.service.status())  # the status panel's text
        assert "**Trainer:** failed" in panel and f"**Last error:** {trainer['last_error']}" in panel
        monkeypatch.delenv(FAULT_ENV)

    # With the fault gone, the next trigger trains on everything the failed rounds left.
    app.service.trainer.stop()
    status = _retrain_until_idle(admin)
    assert status["trainer"]["state"] == "idle" and status["serving_version"] == "v0002", status["trainer"]
    assert app.service.registry.manifest("v0002").metrics.rows["new_edit"] == len(FAULTS)
