"""The team benchmark's builders make valid stores: small sizes, no model, no timing assertions."""

from __future__ import annotations

import json
import shutil

import pytest

from hitl_app.bench.plan import BenchConfig
from hitl_app.bench.report import evaluate_goals, report_rows
from hitl_app.bench.team import bench_team, import_question_set, make_curation, team_service, time_next
from hitl_app.bench.team_stores import (
    REVIEWS_PER_ITEM,
    build_judged_store,
    build_next_store,
    reviewer_names,
    write_question_set,
)
from hitl_app.feedback.holdout import is_held_out
from hitl_app.feedback.queue_records import Claim
from hitl_app.feedback.records import Feedback
from hitl_app.feedback.store import QUEUE_FILE, FeedbackStore, QueueStore
from hitl_app.safety.input_guard import check_input
from hitl_app.service.base import Caller

ROWS = 2_000


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    set_path = root / "questions.jsonl"
    written = write_question_set(set_path, ROWS)
    result = import_question_set(set_path, root / "next" / "feedback")
    (root / "judged" / "feedback").mkdir(parents=True)
    shutil.copy(root / "next" / "feedback" / QUEUE_FILE, root / "judged" / "feedback" / QUEUE_FILE)
    return root, written, result


def test_question_set_has_the_designed_repeats_and_refusals(imported) -> None:
    root, written, _ = imported
    rows = [json.loads(line) for line in (root / "questions.jsonl").read_text().splitlines()]
    assert len(rows) == written["rows"] == ROWS
    keys = [" ".join(r["question"].split()).casefold() for r in rows]
    assert len(keys) - len(set(keys)) == written["duplicates"] == 20
    refused = [r for r in rows if not check_input(r["question"]).allowed]
    # Each refused question is written once; repeats of one may follow it.
    assert len({" ".join(r["question"].split()).casefold() for r in refused}) == written["refused"] == 4
    assert {"id", "question", "answer", "specialty", "source"} <= set(rows[0])


def test_import_counts_match_what_was_written(imported) -> None:
    _, written, result = imported
    assert result["duplicates"] == written["duplicates"]
    assert result["refused"] == written["refused"]
    assert result["imported"] == result["queue_size"] == ROWS - written["duplicates"]
    assert result["redactions"]  # some questions carry identifiers
    assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0


def test_next_store_reads_back_and_next_serves_pregenerated_candidates(imported) -> None:
    root, _, result = imported
    feedback = root / "next" / "feedback"
    made = build_next_store(feedback, judgements=200, pregenerated=30, reviewers=6)
    assert made["judgements"] == made["claims"] == 200 and made["judged_items"] == 100
    service = team_service(feedback, root / "checkpoints")
    try:
        assert service.queue.size == result["imported"]
        assert service.queue.full == 100  # every judged item has its 2 reviews
        judgements = service.ledger.judgements()
        assert len(judgements) == 200
        assert all(j.generation.item_id for j in judgements)
        first = service.queue.items()[:100]
        assert {j.generation.item_id for j in judgements} == {item.id for item in first}
        # Judged items' slots are all taken: Next goes to the first pre-generated item, without the model.
        before = service.ledger.generations_total
        reply = service.next_item(Caller("dr-00"))
        assert reply.item_id == service.queue.items()[100].id
        assert reply.generation_id == made["pregenerated"][0] and reply.version == "base"
        assert service.ledger.generations_total == before
        # A colleague gets the same item's second slot and the same candidates; a third gets the next item.
        assert service.next_item(Caller("dr-01")).generation_id == made["pregenerated"][0]
        third = service.next_item(Caller("dr-02"))
        assert third.generation_id == made["pregenerated"][1]
        with pytest.raises(RuntimeError, match="called the model"):
            service.models.generate("q", k=2)
        for name, shown in (("dr-00", reply), ("dr-01", reply), ("dr-02", third)):
            service.store.append(Feedback(reviewer=name, generation_id=shown.generation_id, action="accept"))
        figures = time_next(service, calls=8, reviewers=4, pregenerated=made["pregenerated"])
        assert figures["claims"] == 8 and figures["calls"] == 8
        assert 0 < figures["p50_s"] <= figures["p99_s"] <= figures["max_s"]
        claims = [r for _, r in QueueStore(feedback).read().records if isinstance(r, Claim)]
        assert len(claims) == 200 + 3 + 8
    finally:
        service.close()


def test_time_next_refuses_an_item_without_pregenerated_candidates(imported, tmp_path) -> None:
    root, _, _ = imported
    feedback = tmp_path / "feedback"
    feedback.mkdir()
    shutil.copy(root / "judged" / "feedback" / QUEUE_FILE, feedback / QUEUE_FILE)  # the bare imported queue
    made = build_next_store(feedback, judgements=20, pregenerated=1, reviewers=4)
    service = team_service(feedback, tmp_path / "checkpoints")
    try:
        # Two slots of the one pre-generated item, then an item that would need the model.
        with pytest.raises(RuntimeError, match="called the model"):
            time_next(service, calls=3, reviewers=3, pregenerated=made["pregenerated"])
    finally:
        service.close()


def test_judged_store_feeds_agreement_and_export(imported, tmp_path) -> None:
    root, _, _ = imported
    feedback = root / "judged" / "feedback"
    items = 900  # every pair of the 10 reviewers meets every scenario once
    judged = build_judged_store(feedback, items=items, reviewers=10)
    assert judged["judgements"] == REVIEWS_PER_ITEM * items
    assert sum(n for k, n in judged["mix"].items() if k != "accepts_turned_to_rejects") == items
    feedbacks = [r for _, r in FeedbackStore(feedback).read().records if r.kind == "feedback"]
    assert {f.reviewer for f in feedbacks} == set(reviewer_names(10))
    assert {f.action for f in feedbacks} == {"accept", "reject", "rank"}
    curation = make_curation(feedback, tmp_path / "checkpoints")
    report = curation.agreement()
    assert report.items == items and report.judgements == 2 * items
    assert curation.agreement() is report  # cached
    assert report.team.alpha_nominal is not None and -1 <= report.team.alpha_nominal < 1  # agree and disagree both
    assert report.team.alpha_ordinal is not None and report.team.alpha_ordinal < 1
    assert len(report.pairs) == 45  # every pair labelled items together
    raw = curation.export("raw", tmp_path / "raw")
    kept = [j for j in curation.ledger.judgements() if not is_held_out(j, curation.holdout_fraction)]
    assert raw.judgements == raw.rows == len(kept) > 0  # every judgement but the held-out ones
    dpo = curation.export("dpo", tmp_path / "dpo")
    assert 0 < dpo.rows < raw.rows  # pairs from agreed rankings only


def test_quick_sizes_are_smaller_and_goals_are_reported() -> None:
    full, quick = BenchConfig(), BenchConfig.make(True, (1,), 1, ("team",))
    assert quick.team_questions < full.team_questions == 100_000
    assert quick.team_agreement_items < full.team_agreement_items == 50_000
    with pytest.raises(ValueError, match="team_next_judgements"):
        BenchConfig(team_next_judgements=3)
    team = {
        "sizes": {}, "build_s": {"question_set_s": 1.0},
        "import": {"wall_s": 31.0, "written": {"rows": 100}, "imported": 99, "duplicates": 1, "refused": 0,
                   "peak_rss_delta_mb": 10.0, "peak_rss_mb": 200.0},
        "next": {"p50_s": 0.01, "p99_s": 0.02, "max_s": 0.03, "queue_size": 99, "judgements": 10, "calls": 5, "reviewers": 2},
        "agreement": {"cold_s": 1.0, "cached_s": 0.0, "judgements": 10, "alpha_nominal": 0.5, "alpha_ordinal": 0.4,
                      "ledger_and_queue_read_s": 0.1},
        "export": {"judgements": 10, "dpo": {"wall_s": 5.0, "rows": 3}, "raw": {"wall_s": 21.0, "rows": 10}},
    }
    goals = evaluate_goals({"team": team})
    assert goals["team_import_within_30s"] is False and goals["team_next_p99_within_50ms"] is True
    assert goals["team_agreement_within_2s"] is True and goals["team_export_within_20s"] is False
    rows = report_rows({"team": team, "goals": goals})
    assert any(r[0].startswith("0b. team: import of 100 questions") and "NO" in r[2] for r in rows)


def test_bench_team_end_to_end_records_every_figure_with_its_goal(tmp_path) -> None:
    cfg = BenchConfig(only=("team",), team_questions=1_500, team_next_judgements=100, team_next_calls=10,
                      team_next_reviewers=4, team_agreement_items=300, team_agreement_reviewers=4)
    result = bench_team(cfg, tmp_path / "team")
    assert not (tmp_path / "team").exists()  # cleaned up
    imp = result["import"]
    assert imp["imported"] == 1_500 - imp["written"]["duplicates"] and imp["peak_rss_delta_mb"] > 0
    assert result["next"]["claims"] == 10 and result["next"]["judgements"] == 100
    assert result["agreement"]["judgements"] == 600 and result["agreement"]["cached_s"] <= result["agreement"]["cold_s"]
    assert result["export"]["raw"]["rows"] > result["export"]["dpo"]["rows"] > 0
    for figure, goal in (("import", "goal_s"), ("next", "goal_p99_s"), ("agreement", "goal_s"), ("export", "goal_s")):
        assert goal in result[figure] and isinstance(result[figure]["meets_goal"], bool), figure
    assert set(result["build_s"]) == {"question_set_s", "next_store_s", "next_service_s", "judged_store_s"}
    goals = evaluate_goals({"team": result})
    assert {"team_import_within_30s", "team_next_p99_within_50ms", "team_agreement_within_2s",
            "team_export_within_20s"} <= set(goals)
