"""The Dashboard tab's frames: hand-checkable counts, rates, gate lines, win rates and the timeline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import gradio as gr
import pytest

from hitl_app.comparison.votes import vote_outcomes
from hitl_app.service.service import HITLService
from hitl_app.service.views import VersionRow
from hitl_app.ui.dashboard import build_dashboard
from hitl_app.ui.figures import (
    ab_win_rates,
    refresh,
    gate_metric_per_version,
    judgements_over_time,
    kl_per_version,
    rates_per_version,
    retrain_timeline,
    training_per_version,
)
from hitl_app.feedback.ledger import Judgement
from hitl_app.versions.registry import ADAPTER_WEIGHTS, Registry
from hitl_app.evaluation.style_checks import make_check
from hitl_app.versions.manifest import (
    EvalMetrics,
    GateCheck,
    GateResult,
    Manifest,
    PreferenceMetrics,
    RoundMetrics,
    RoundRecord,
    TrainerStatus,
)
from hitl_app.feedback.records import Feedback, Generation, Sampling
from hitl_app.feedback.store import FeedbackStore

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
SAMPLING = Sampling(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=16)


def generation(version: str = "base", versions: list[str] | None = None) -> Generation:
    n = len(versions) if versions else 1
    return Generation(
        reviewer="dr", prompt="q", candidates=[f"answer {i}" * (i + 1) for i in range(n)], version=version,
        sampling=SAMPLING, prompt_tokens=3, purpose="compare" if versions else "review", candidate_versions=versions,
    )


def judged(gen: Generation, action: str, minute: int, **fields) -> Judgement:
    defaults = {"edit": {"text": "better"}, "reject": {"reason": "wrong dose"}, "rank": {"ranking": [[0]]}}
    fb = Feedback(reviewer="dr", generation_id=gen.id, action=action, created_at=T0 + timedelta(minutes=minute),
                  **(fields or defaults.get(action, {})))
    return Judgement(offset=minute, feedback=fb, generation=gen)


def vote(a: str, b: str, outcome: str, minute: int = 0) -> Judgement:
    ranking = {"left": [[0], [1]], "right": [[1], [0]], "tie": [[0, 1]], "both_bad": []}[outcome]
    return judged(generation(versions=[a, b]), "vote", minute, ranking=ranking)


def manifest(version: str, kl: float = 0.1, accuracy: float = 0.7, held_back: bool = False) -> Manifest:
    evaluation = EvalMetrics(
        serving_version="base", heldout_pairs=8, heldout_accuracy=accuracy, serving_heldout_accuracy=0.5,
        heldout_edits=0, perplexity=11.0, serving_perplexity=10.0, kl_base=kl, kl_serving=kl / 2,
        mean_answer_tokens=40.0, duration_s=3.0,
    )
    checks = [
        GateCheck(metric="heldout_accuracy", value=accuracy, serving=0.5, limit=0.45, passed=accuracy >= 0.45),
        GateCheck(metric="perplexity", value=11.0, serving=10.0, limit=11.0, passed=True),
        GateCheck(metric="kl_base", value=kl, limit=0.25, passed=kl <= 0.25),
    ]
    return Manifest(
        version=version, parent="base", base_model="x", record_ids=[], store_cursor=0, config={},
        metrics=RoundMetrics(
            duration_s=20.0, train_loss_before=2.0, train_loss_after=1.5,
            preference=PreferenceMetrics(method="dpo", rows=4, steps=2, loss=0.6, reward_margin=0.3, duration_s=5.0),
        ),
        evaluation=evaluation,
        gate=GateResult(enabled=True, passed=not held_back, checks=checks),
    )


def test_empty_inputs_give_empty_frames_that_the_plots_accept() -> None:
    frames = {
        "judgements": (judgements_over_time([]), gr.LinePlot(x="time", y="judgements", color="kind")),
        "rates": (rates_per_version([]), gr.BarPlot(x="version", y="rate", color="kind")),
        "training": (training_per_version([]), gr.LinePlot(x="version", y="value", color="figure")),
        "gate": (gate_metric_per_version([], "perplexity"), gr.LinePlot(x="version", y="value", color="series")),
        "kl": (kl_per_version([], 0.25), gr.LinePlot(x="version", y="value", color="series")),
        "ab": (ab_win_rates([]), gr.BarPlot(x="pair", y="win_rate", color="version")),
        "timeline": (retrain_timeline([]), gr.ScatterPlot(x="started", y="duration_s", color="outcome")),
    }
    for name, (frame, plot) in frames.items():
        assert frame.empty, name
        assert plot.x in frame.columns and plot.y in frame.columns, name
        assert plot.postprocess(frame) is not None, name


def test_judgements_over_time_counts_each_kind_cumulatively() -> None:
    g = generation()
    frame = judgements_over_time(
        [judged(g, "accept", 0), judged(g, "edit", 1), judged(g, "accept", 2), judged(g, "accept", 3)]
    )
    accepts = frame[frame.kind == "accept"]
    assert list(accepts.judgements) == [1, 2, 3]
    assert list(frame[frame.kind == "edit"].judgements) == [1]
    assert frame.time.iloc[-1] == datetime(2026, 11, 1, 9, 3)  # naive UTC for the time axis


def test_rates_per_version_are_shares_of_each_versions_judgements_without_votes() -> None:
    base, v1 = generation("base"), generation("v0001")
    judgements = [
        judged(base, "accept", 0), judged(base, "edit", 1), judged(base, "edit", 2), judged(base, "reject", 3),
        judged(v1, "accept", 4), judged(v1, "accept", 5), judged(v1, "accept", 6), judged(v1, "edit", 7),
        vote("base", "v0001", "left", 8),
    ]
    frame = rates_per_version(judgements)
    rate = {(r.version, r.kind): r.rate for r in frame.itertuples()}
    assert rate == {
        ("base", "accept"): 0.25, ("base", "edit"): 0.5, ("base", "reject"): 0.25,
        ("v0001", "accept"): 0.75, ("v0001", "edit"): 0.25,
    }
    assert list(dict.fromkeys(frame.version)) == ["base", "v0001"]


def test_training_and_gate_frames_carry_each_versions_figures_and_limits() -> None:
    manifests = [manifest("v0001"), manifest("v0002", kl=0.4, held_back=True)]
    training = training_per_version(manifests)
    assert set(training.figure) == {"SFT loss before", "SFT loss after", "preference loss", "preference reward margin"}
    assert training[(training.version == "v0002") & (training.figure == "preference reward margin")].value.item() == 0.3

    accuracy = gate_metric_per_version(manifests, "heldout_accuracy")
    v1 = {r.series: r.value for r in accuracy[accuracy.version == "v0001"].itertuples()}
    assert v1 == {"new version": 0.7, "serving before it": 0.5, "gate limit": 0.45}

    kl_check = gate_metric_per_version(manifests, "kl_base")
    assert set(kl_check[kl_check.version == "v0002"].series) == {"new version", "gate limit"}  # no serving figure
    assert gate_metric_per_version(manifests, "edit_logprob").empty  # never measured

    kl = kl_per_version(manifests, budget=0.25)
    assert kl[(kl.version == "v0002") & (kl.series == "KL(new || base)")].value.item() == 0.4
    assert set(kl[kl.series == "KL budget"].value) == {0.25}


def test_ab_win_rates_split_each_pair_and_count_ties_as_half() -> None:
    judgements = [
        vote("base", "v0001", "right"),  # v0001 wins
        vote("v0001", "base", "left"),   # v0001 wins, listed the other way round
        vote("base", "v0001", "right"),  # v0001 wins
        vote("base", "v0001", "left"),   # base wins
        vote("base", "v0001", "tie"),
        vote("base", "v0001", "both_bad"),  # neither side
        vote("v0001", "v0002", "left"),
    ]
    frame = ab_win_rates(vote_outcomes(judgements))
    pair = frame[frame.pair == "base vs v0001"]
    rates = dict(zip(pair.version, pair.win_rate))
    assert rates["v0001"] == pytest.approx(3.5 / 5)
    assert rates["base"] == pytest.approx(1.5 / 5)
    assert set(pair.votes) == {6}
    other = frame[frame.pair == "v0001 vs v0002"]
    assert dict(zip(other.version, other.win_rate)) == {"v0001": 1.0, "v0002": 0.0}


def test_retrain_timeline_lists_rounds_and_the_one_running() -> None:
    rounds = [
        RoundRecord(started_at=T0, duration_s=40.0, requested_by="auto", outcome="published", version="v0001"),
        RoundRecord(started_at=T0 + timedelta(hours=1), duration_s=3.0, requested_by="admin", outcome="failed",
                    detail="RuntimeError: boom"),
    ]
    running = TrainerStatus(state="training", started_at=datetime.now(timezone.utc) - timedelta(seconds=30), message="SFT")
    frame = retrain_timeline(rounds, running)
    assert list(frame.outcome) == ["published", "failed", "running"]
    assert frame.duration_s.iloc[-1] == pytest.approx(30, abs=5)
    assert frame.detail.iloc[1] == "RuntimeError: boom"
    assert list(retrain_timeline(rounds, TrainerStatus(state="idle")).outcome) == ["published", "failed"]


def test_build_dashboard_draws_every_plot_from_the_service(tmp_path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    registry = Registry(tmp_path / "checkpoints")
    g = generation()
    store.append(g)
    store.append(Feedback(reviewer="dr", generation_id=g.id, action="accept"))
    staging = registry.staging_dir()
    (staging / ADAPTER_WEIGHTS).write_bytes(b"weights")
    version = registry.publish(staging, manifest("pending"))
    registry.record_round(RoundRecord(started_at=T0, duration_s=12.0, requested_by="auto", outcome="published", version=version))
    # The real service over the store and registry; the model and the trainer are not read.
    service = HITLService(
        settings=SimpleNamespace(
            gate_kl_budget=0.25, feedback_dir=tmp_path / "feedback", reviews_per_item=1, consensus_threshold=0.6,
            rubric="off", holdout_fraction=0.0, pregenerate=0, uncertain_first="off",
        ),
        store=store,
        models=SimpleNamespace(),
        registry=registry,
        trainer=SimpleNamespace(status=lambda: TrainerStatus()),
    )
    service.style_checks.put(make_check("summary", "^Summary:", regex=True))
    with gr.Blocks() as demo:
        plots = build_dashboard(service, demo, every_s=2.0)
    assert len(plots) == 16 and all(isinstance(p, (gr.LinePlot, gr.BarPlot, gr.ScatterPlot)) for p in plots)
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert [t.value for t in timers] == [2.0]
    # One refresh fills every plot, on page load and on each tick, and is not an API endpoint.
    [refresh_event] = [d for d in demo.fns.values() if d.outputs == plots]
    assert {t for _, t in refresh_event.targets} == {"load", "tick"}
    assert refresh_event.api_visibility == "private"

    frames = dict(zip((p.title for p in plots), refresh(service.dashboard_data())))
    for frame, plot in zip(frames.values(), plots):
        assert plot.postprocess(frame) is not None
    assert list(frames["Judgements over time, by kind"].judgements) == [1]
    assert list(frames["Retrain timeline: start, duration, outcome"].version) == [version]
    kl = frames["KL from the base per version (nats / token)"]
    assert set(kl.version) == {version}
    assert frames["Blind A/B win rates"].empty
    styles = frames["Taught styles: share of each version's sample answers that show them"]
    assert list(styles.columns) == ["version", "style", "adoption", "answers"]  # the test manifest keeps no samples
    edits = frames["Edits per reviewer, and those that did not read as clinical text"]
    assert edits.empty  # the only judgement is an accept


def test_every_versions_column_is_a_version_row_field() -> None:
    from hitl_app.ui.versions import VERSION_COLUMNS

    fields = [field for field, _ in VERSION_COLUMNS]
    assert len(set(fields)) == len(fields) and set(fields) <= set(VersionRow.model_fields)
    # Every figure of a version is shown; only the serving flag is told by the status column instead.
    assert set(VersionRow.model_fields) - set(fields) == {"serving"}
