"""What a round does not redo: the serving version's figures on the shipped data are read back (its
manifest, the base's cache) and the manifest says so; no evaluation pass runs inside TRL; the
trainer's thread count follows the app's answers; a round budget cuts replay and evaluation, and
the manifest names what it cut.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

import hitl_app.evaluation.version_eval as version_eval
import hitl_app.training.round as training_round
from hitl_app.evaluation.eval_cache import BaseCache
from hitl_app.feedback.records import BASE_VERSION
from hitl_app.feedback.store import FeedbackStore
from hitl_app.training import threads as trainer_threads
from hitl_app.training.round import RoundRunner
from hitl_app.training.threads import ThreadGovernor
from hitl_app.versions.registry import Registry
from tests.test_trainer import QA, Judge

# Small shipped sets, so the tiny model's evaluations stay quick; the gate off, so every version serves.
FAST = dict(redteam_prompts=2, eval_probe_prompts=3, gate="off", replay_size=2, num_epochs=1)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the measurements of a version's figures on the shipped data (one per version measured)."""
    calls: list[int] = []
    real = version_eval.measure_fixed

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(version_eval, "measure_fixed", counting)
    monkeypatch.setattr(training_round, "measure_fixed", counting)  # RoundRunner.prepare's
    return calls


def judge_three(settings, offset: int = 0) -> None:
    judge = Judge(FeedbackStore(settings.feedback_dir))
    for question, answer in QA[offset : offset + 3]:
        judge.judge("accept", question, answer)


def test_rounds_reuse_the_serving_figures_and_say_so(make_settings, tiny_base: Path, measured: list[int]) -> None:
    settings = make_settings(**FAST)
    registry = Registry(settings.checkpoints_dir)
    runner = RoundRunner(settings, str(tiny_base))

    # The first round on the base measures both versions and caches the base's figures.
    judge_three(settings)
    assert runner.run("r1") == "v0001"
    first = registry.manifest("v0001").evaluation
    assert first.reused == {} and first.serving_figures_from == "measured"
    assert len(measured) == 2 and first.eval_key
    assert list(BaseCache(settings.checkpoints_dir).root.glob("base-*.json"))

    # A round on the base again reads the base's figures back from the cache.
    registry.set_active(BASE_VERSION, by="test")
    judge_three(settings, 3)
    assert runner.run("r2") == "v0002"
    second = registry.manifest("v0002").evaluation
    assert len(measured) == 3  # the new version only
    assert second.eval_key == first.eval_key
    assert set(second.reused.values()) == {"base cache"}
    assert {"serving_perplexity", "serving_safe_rate", "serving_loop_rate"} <= second.reused.keys()
    assert second.serving_perplexity == first.serving_perplexity
    assert [s.serving_answer for s in registry.manifest("v0002").samples] == [
        s.serving_answer for s in registry.manifest("v0001").samples
    ]

    # A round on v0002 reads v0002's own figures back from its manifest.
    judge_three(settings)
    assert runner.run("r3") == "v0003"
    third = registry.manifest("v0003")
    assert len(measured) == 4
    assert third.parent == "v0002" and third.evaluation.serving_figures_from == "manifest v0002"
    assert third.evaluation.serving_perplexity == second.perplexity
    assert third.evaluation.serving_reference_logprob == second.reference_logprob
    assert third.evaluation.serving_safe_rate == second.safe_rate
    assert [s.serving_answer for s in third.samples] == [s.answer for s in registry.manifest("v0002").samples]

    # A changed evaluation setting changes the key: nothing is read back, both versions are measured.
    changed = make_settings(**{**FAST, "redteam_prompts": 3})
    judge_three(changed, 3)
    assert RoundRunner(changed, str(tiny_base)).run("r4") == "v0004"
    fourth = registry.manifest("v0004").evaluation
    assert fourth.eval_key != third.evaluation.eval_key
    assert fourth.reused == {} and len(measured) == 6


def test_prepare_fills_the_base_cache_before_the_first_round(
    make_settings, tiny_base: Path, measured: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hitl_app.evaluation.clinical_text import ClinicalTextJudge

    settings = make_settings(**FAST)
    runner = RoundRunner(settings, str(tiny_base))
    runner.prepare()
    assert runner._judge is not None and len(measured) == 1
    judge_three(settings)
    assert runner.run("r1") == "v0001"
    evaluation = Registry(settings.checkpoints_dir).manifest("v0001").evaluation
    assert len(measured) == 2 and set(evaluation.reused.values()) == {"base cache"}
    # a restarted trainer reads the judge back instead of calibrating it again
    again = RoundRunner(settings, str(tiny_base))
    again._load()
    def refuse(*args, **kwargs):
        raise AssertionError("the judge was calibrated again")

    monkeypatch.setattr(ClinicalTextJudge, "calibrate", refuse)
    again.prepare()
    assert again._judge.threshold == evaluation.clinical_threshold
    assert len(measured) == 2  # v0001 serves: the base's figures are not needed


def test_a_round_runs_no_evaluation_pass_inside_trl(make_settings, tiny_base: Path, monkeypatch) -> None:
    import transformers

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__}.evaluate() ran in a round")

    monkeypatch.setattr(transformers.Trainer, "evaluate", refuse)
    settings = make_settings(**FAST)
    judge = Judge(FeedbackStore(settings.feedback_dir))
    judge.judge("accept", *QA[0])
    judge.judge("edit", QA[1][0], "Paracetamol 1 g", text=QA[1][1])  # an SFT row and a DPO pair
    assert RoundRunner(settings, str(tiny_base)).run("r1") == "v0001"
    metrics = Registry(settings.checkpoints_dir).manifest("v0001").metrics
    assert metrics.train_loss_from == "training steps"
    assert metrics.train_loss_before is not None and metrics.train_loss_after is not None
    assert metrics.preference.method == "dpo" and metrics.preference.figures_from == "training steps"
    assert metrics.preference.reward_margin is not None and metrics.preference.loss_after is None


class _Shared:
    """Stands in for the multiprocessing.Value the app shares with the trainer."""

    def __init__(self, value: int = 0) -> None:
        self.value = value


def test_the_trainer_takes_the_idle_cores_only_while_no_answer_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = {"busy": 0, "own": 0}
    monkeypatch.setattr(trainer_threads, "_cpu_ticks", lambda: (ticks["busy"], ticks["own"]))
    monkeypatch.setattr(trainer_threads, "MIN_SAMPLE_S", 0.0)
    clock = {"t": 100.0}
    monkeypatch.setattr(trainer_threads.time, "monotonic", lambda: clock["t"])
    answering = _Shared()
    governor = ThreadGovernor(1, answering, cores=4)
    tick = governor._tick

    def elapse(seconds: float, foreign_cores: float) -> None:
        clock["t"] += seconds
        ticks["busy"] += int((foreign_cores + 1) * seconds * tick)
        ticks["own"] += int(seconds * tick)

    before = torch.get_num_threads()
    try:
        assert governor.apply() == 1  # nothing measured yet
        elapse(1.0, foreign_cores=0.0)
        assert governor.apply() == 4 and torch.get_num_threads() == 4  # idle machine: every core
        answering.value = 1
        elapse(1.0, foreign_cores=0.0)
        assert governor.apply() == 1 and torch.get_num_threads() == 1  # an answer streams
        answering.value = 0
        elapse(1.0, foreign_cores=2.0)
        assert governor.apply() == 2  # another process holds two cores: the other two
    finally:
        torch.set_num_threads(before)


def test_the_thread_callback_switches_at_every_training_step(tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerCallback

    from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
    from hitl_app.training.sft import attach_adapter, train_sft
    from tests.test_trainer import config, sft_rows

    monkeypatch.setattr(trainer_threads, "_cpu_ticks", lambda: None)  # no /proc: idle means every core
    answering = _Shared(1)
    governor = ThreadGovernor(1, answering, cores=2)
    seen: list[int] = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(torch.get_num_threads())
            answering.value = 0 if state.global_step >= 1 else 1  # the answer ends after the first step

    before = torch.get_num_threads()
    try:
        cfg = config(batch_size=1, num_epochs=1)
        model = attach_adapter(load_base(tiny_base, LoadOptions(device="cpu")), None, cfg)
        train_sft(model, load_tokenizer(tiny_base), sft_rows()[:3], cfg, callbacks=[governor.callback(), Record()])
    finally:
        torch.set_num_threads(before)
    # the governor runs first at each step: 1 thread while the answer streams, then both cores
    assert seen == [1, 1, 2]


def test_the_governor_applies_before_every_forward_pass_while_watching(tiny_base: Path, monkeypatch) -> None:
    from peft import PeftModel

    from hitl_app.serving.base_model import LoadOptions, load_base
    from hitl_app.training.sft import attach_adapter
    from tests.test_trainer import config

    monkeypatch.setattr(trainer_threads, "_cpu_ticks", lambda: None)
    governor = ThreadGovernor(1, _Shared(1), cores=2)
    base = load_base(tiny_base, LoadOptions(device="cpu"))
    model = attach_adapter(base, None, config())
    assert isinstance(model, PeftModel)
    ids = torch.tensor([[1, 2, 3]])
    before = torch.get_num_threads()
    try:
        with governor.watching(base):
            torch.set_num_threads(2)
            with torch.no_grad():
                model(input_ids=ids)  # through PEFT's wrapper, as training and evaluation call it
            assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        with torch.no_grad():
            model(input_ids=ids)
        assert torch.get_num_threads() == 2  # the hook is gone after the block
    finally:
        torch.set_num_threads(before)


def test_trainer_client_counts_answers_in_flight(make_settings, tiny_base: Path) -> None:
    from hitl_app.training.process import TrainerClient

    client = TrainerClient(make_settings(), str(tiny_base))
    assert client.answers_in_flight() == 0
    client.answering(True)
    client.answering(True)
    client.answering(False)
    assert client.answers_in_flight() == 1
    client.answering(False)
    client.answering(False)  # one too many: never below 0
    assert client.answers_in_flight() == 0
    assert isinstance(client._answering, type(mp.get_context("spawn").Value("i", 0)))


def test_a_round_budget_cuts_replay_and_evaluation_and_says_so(make_settings, tiny_base: Path) -> None:
    settings = make_settings(**FAST)
    judge_three(settings)
    assert RoundRunner(settings, str(tiny_base)).run("r1") == "v0001"  # no budget: the estimates' source
    full = Registry(settings.checkpoints_dir).manifest("v0001")
    assert "budget" not in (full.metrics.model_extra or {}) and full.evaluation.reduced == {}

    tight = make_settings(**{**FAST, "round_budget_s": 0.01})
    judge_three(tight, 3)
    assert RoundRunner(tight, str(tiny_base)).run("r2") == "v0002"
    m = Registry(settings.checkpoints_dir).manifest("v0002")
    budget = m.metrics.model_extra["budget"]
    assert budget["replay_size_asked"] == 2 and budget["replay_size"] == 0
    assert budget["estimated_eval_s"] > 0 and budget["eval_fraction"] < 1
    assert not any(k.startswith("replay_") and v for k, v in m.metrics.rows.items())
    assert m.record_ids == m.new_record_ids  # nothing replayed
    reduced = m.evaluation.reduced
    assert reduced["loop_rate"] == f"{version_eval.MIN_SAMPLE_QUESTIONS} of {version_eval.SAMPLE_QUESTIONS} sample questions"
    assert reduced["kl_base"].endswith("KL prompts") and reduced["safe_rate"].startswith("1 of 2")
    assert m.evaluation.sample_answers == len(m.samples) == version_eval.MIN_SAMPLE_QUESTIONS
    # the serving version's red-team figures are its full ones, read back: the manifest says both
    assert m.evaluation.reused["serving_safe_rate"] == "manifest v0001"

    # the next round's evaluation estimate is still the full evaluation's, not the cut one's
    judge_three(tight)
    assert RoundRunner(tight, str(tiny_base)).run("r3") == "v0003"
    third = Registry(settings.checkpoints_dir).manifest("v0003").metrics.model_extra["budget"]
    assert third["estimated_eval_s"] == round(full.evaluation.duration_s, 1)


def test_a_negative_round_budget_is_refused(make_settings) -> None:
    with pytest.raises(ValueError, match="--round-budget-s must be 0 or more"):
        make_settings(round_budget_s=-1)
    assert make_settings(round_budget_s=90).training_config.round_budget_s == 90
