"""The reward-model stage of a round: trained on the round's pairs, published with the policy in the
same version folder, continued from the parent's, off with ``--reward-model off``, and a failure in
it publishes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling
from hitl_app.feedback.store import FeedbackStore
from hitl_app.service.views import VersionRow
from hitl_app.training.faults import FAULT_ENV
from hitl_app.training.round import RoundRunner
from hitl_app.versions.registry import ADAPTER_WEIGHTS, REWARD_SUBDIR, Registry
from tests.helpers import urgent_generation

GREEDY = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8)
QUESTIONS = [
    "I have crushing chest pain, what should I do?",
    "My face is drooping on one side, is that serious?",
    "I cannot stop a deep cut from bleeding.",
    "My child is struggling to breathe.",
    "I suddenly cannot speak properly.",
    "I have the worst headache of my life.",
]


def _rank(store: FeedbackStore, question: str) -> Feedback:
    """A clinician ranks the urgent answer above the one that waits: one preference pair."""
    gen = urgent_generation(store, question)
    fb = Feedback(reviewer="dr-a", generation_id=gen.id, action="rank", ranking=[[0], [1]])
    store.append(fb)
    return fb


@pytest.fixture
def settings(make_settings):
    return make_settings(num_epochs=1, replay_size=2, train_batch_size=4, reward_model="on", reward_epochs=1, gate="off")


def test_a_round_publishes_its_reward_model_with_the_policy(settings, tiny_base: Path) -> None:
    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:4]:
        _rank(store, q)
    assert RoundRunner(settings, str(tiny_base)).run("test") == "v0001"

    registry = Registry(settings.checkpoints_dir)
    m = registry.manifest("v0001")
    reward = m.metrics.reward_model
    assert reward is not None and reward.pairs == m.metrics.rows["dpo"] == 4
    assert reward.steps >= 1 and reward.continued_from is None and reward.duration_s > 0
    assert registry.reward_dir("v0001") == registry.adapter_dir("v0001") / REWARD_SUBDIR
    assert (registry.adapter_dir("v0001") / REWARD_SUBDIR / ADAPTER_WEIGHTS).is_file()
    assert registry.reward_dir(BASE_VERSION) is None
    assert m.config["reward_model"] == "on"
    row = VersionRow.of(m, serving="v0001")
    assert row.reward_model_pairs == 4
    assert row.reward_model_accuracy == reward.heldout_accuracy
    # the round's reward model also scored both versions' sample answers, labelled as a proxy
    scored = m.evaluation.reward
    assert scored is not None and scored.reward_version == "own" and scored.label == "learned proxy"
    assert scored.prompts == m.evaluation.sample_answers > 0
    assert 0 <= scored.win_rate_low <= scored.win_rate <= scored.win_rate_high <= 1
    assert row.reward_win_rate == scored.win_rate
    assert any(c.metric == "reward_length_adjusted_gain" for c in m.gate.checks)


def test_the_next_round_continues_from_the_parents_reward_model(
    settings, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hitl_app.training.reward as reward_stage

    previous: list[Path | None] = []
    attach = reward_stage.attach_reward_adapter

    def recording(model, prev, cfg):
        previous.append(prev)
        return attach(model, prev, cfg)

    monkeypatch.setattr(reward_stage, "attach_reward_adapter", recording)
    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:3]:
        _rank(store, q)
    runner = RoundRunner(settings, str(tiny_base))
    assert runner.run("round-1") == "v0001"
    for q in QUESTIONS[3:]:
        _rank(store, q)
    assert runner.run("round-2") == "v0002"  # the same runner: the reward base reused after unloading

    registry = Registry(settings.checkpoints_dir)
    assert previous == [None, registry.adapter_dir("v0001") / REWARD_SUBDIR]
    assert registry.manifest("v0002").metrics.reward_model.continued_from == "v0001"


def test_reward_model_off_trains_none(make_settings, tiny_base: Path) -> None:
    settings = make_settings(num_epochs=1, train_batch_size=4, reward_model="off", gate="off")
    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:2]:
        _rank(store, q)
    assert RoundRunner(settings, str(tiny_base)).run("test") == "v0001"
    registry = Registry(settings.checkpoints_dir)
    assert registry.manifest("v0001").metrics.reward_model is None
    assert registry.reward_dir("v0001") is None
    assert VersionRow.of(registry.manifest("v0001"), serving="v0001").reward_model_accuracy is None


def test_a_failing_reward_stage_publishes_nothing(settings, tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:2]:
        _rank(store, q)
    runner = RoundRunner(settings, str(tiny_base))
    monkeypatch.setenv(FAULT_ENV, "reward")
    with pytest.raises(RuntimeError, match="reward stage"):
        runner.run("test")
    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == []
    assert registry.active().version == BASE_VERSION
    assert list(settings.checkpoints_dir.glob(".staging-*")) == []
    # the runner is still usable: the next round, without the fault, publishes policy and reward together
    monkeypatch.delenv(FAULT_ENV)
    assert runner.run("again") == "v0001"
    assert registry.reward_dir("v0001") is not None


KILLED_ROUND = """
import sys
from tests.helpers import TINY_SETTINGS
from hitl_app.core.config import Settings
from hitl_app.training.round import RoundRunner
base, feedback, checkpoints = sys.argv[1:4]
settings = Settings(**{**TINY_SETTINGS, "base_model": base, "feedback_dir": feedback, "checkpoints_dir": checkpoints,
                       "reward_model": "on", "reward_epochs": 1, "gate": "off"})
RoundRunner(settings, base).run("test")
"""


def test_a_round_killed_in_its_reward_stage_leaves_nothing_listed(settings, tiny_base: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import REPO

    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:2]:
        _rank(store, q)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_ROUND, str(tiny_base), str(settings.feedback_dir), str(settings.checkpoints_dir)],
        cwd=REPO, env={**os.environ, FAULT_ENV: "reward-kill"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    registry = Registry(settings.checkpoints_dir)
    assert registry.versions() == [] and registry.active().version == BASE_VERSION
    # the half-written version is an unlisted staging folder, removed at the next start
    assert len(list(settings.checkpoints_dir.glob(".staging-*"))) == 1
    assert registry.clean_staging() == 1


def test_an_rl_round_learns_against_its_reward_model_on_unjudged_questions(make_settings, tiny_base: Path) -> None:
    from hitl_app.feedback.ledger import FeedbackLedger
    from hitl_app.training.rl_prompts import rl_prompts

    settings = make_settings(
        num_epochs=1, train_batch_size=4, reward_model="on", reward_epochs=1, gate="off", train_method="rl",
        rl_prompts=4, rl_generations=2, rl_max_new_tokens=8,
    )  # fmt: skip
    store = FeedbackStore(settings.feedback_dir)
    for q in QUESTIONS[:2]:
        _rank(store, q)
    asked = Generation(reviewer="dr-a", prompt="Is a sore throat for two days a worry?", candidates=["Usually not."],
                       version=BASE_VERSION, sampling=GREEDY, prompt_tokens=9)  # fmt: skip
    store.append(asked)  # asked, never judged: RL's own kind of question
    assert RoundRunner(settings, str(tiny_base)).run("test") == "v0001"

    m = Registry(settings.checkpoints_dir).manifest("v0001")
    assert m.metrics.preference is None  # no DPO: the pairs teach through the reward model
    assert m.metrics.reward_model is not None and m.metrics.reward_model.pairs == 2
    rl = m.metrics.rl
    assert rl is not None and rl.trainer == "grpo" and rl.reward_version == "own"
    assert rl.prompts == 4 and rl.generations == 2 and rl.steps >= 1 and rl.beta == settings.rl_beta
    assert rl.prompt_sources == {"asked": 1, "shipped": 3}
    assert set(rl.rewards) == {"reward_model", "safety"} and rl.kl_last is not None
    assert m.config["train_method"] == "rl" and m.config["rl_prompts"] == 4

    # the questions it learned from are the unjudged ones: never a judged question
    ledger = FeedbackLedger(store)
    ledger.refresh()
    chosen = rl_prompts(ledger.judgements(), ledger.generations(), [], 50, seed=0)
    assert asked.prompt in chosen.questions and not set(QUESTIONS[:2]) & set(chosen.questions)


def test_rl_needs_the_reward_model(make_settings) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs --reward-model on"):
        make_settings(train_method="rl", reward_model="off")


def test_the_progress_bar_gives_each_stage_its_span_in_the_order_they_run() -> None:
    from hitl_app.training.round import TRAIN_SHARE, _Spans

    spans = _Spans.of([("sft", 2), ("preference", 0), ("reward", 4), ("rl", 2)])
    assert spans.spans["sft"] == (0.0, TRAIN_SHARE * 0.25)
    assert spans.spans["preference"] == (TRAIN_SHARE * 0.25, TRAIN_SHARE * 0.25)  # a stage that does not run
    assert spans.at("reward", 0.5) == pytest.approx(TRAIN_SHARE * 0.5)
    assert spans.spans["rl"] == (pytest.approx(TRAIN_SHARE * 0.75), pytest.approx(TRAIN_SHARE))
    assert _Spans.of([("sft", 0)]).at("sft", 1.0) == 0.0
