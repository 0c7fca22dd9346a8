"""How many CPU threads an answer may use, given the trainer's state (serving.threads.serve_threads_policy)."""

from __future__ import annotations

import os

import pytest

from hitl_app.serving.threads import serve_threads_policy


class FakeTrainer:
    """Stands in for TrainerClient: only ``busy()`` is consulted."""

    def __init__(self) -> None:
        self.training = False

    def busy(self) -> bool:
        return self.training


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_answers_use_every_core_when_idle_and_leave_the_trainers_while_it_trains(
    make_settings, monkeypatch: pytest.MonkeyPatch, cores: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    trainer = FakeTrainer()
    policy = serve_threads_policy(make_settings(trainer_threads=1).serving_config, trainer)
    assert policy() == cores
    trainer.training = True
    assert policy() == max(1, cores - 1)
    trainer.training = False
    assert policy() == cores


def test_a_fixed_serve_threads_is_used_as_given(make_settings) -> None:
    trainer = FakeTrainer()
    policy = serve_threads_policy(make_settings(serve_threads=3).serving_config, trainer)
    trainer.training = True
    assert policy() == 3
