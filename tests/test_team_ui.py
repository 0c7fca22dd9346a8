"""The team-review UI over a real service on the tiny model: the Review tab's Next, Skip and rubric,
the Team tab's import, adjudication, export and audit, and the Dashboard's agreement tables.

Handlers are called directly, as Gradio would call them, with requests carrying the logins.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from hitl_app.core.errors import PermissionDeniedError, UserError
from hitl_app.feedback.records import Feedback
from hitl_app.service.service import Caller
from hitl_app.ui.agreement import AgreementSection
from hitl_app.ui.demo import build_demo
from hitl_app.ui.errors import user_errors
from hitl_app.ui.login import Login
from hitl_app.ui.review import ReviewTab
from hitl_app.ui.team import TeamTab, zero_based_order
from tests.helpers import QUESTION_SET

ROLES = {"admin": "admin", "drlee": "clinician"}
ADMIN, CLINICIAN = gr.Request(username="admin"), gr.Request(username="drlee")
SET = QUESTION_SET


@pytest.fixture
def service(make_settings):
    from hitl_app.app import create_service

    # No automatic rounds: the judgements here are about the UI, not training.
    svc = create_service(make_settings(reviews_per_item=2, rubric="on", auto_retrain=False))
    yield svc
    svc.close()
    svc.models.close()
    svc.trainer.stop()


@pytest.fixture
def ui(service):
    """The Review tab, the Team tab and the agreement tables over ``service``, with the test logins."""
    login = Login(ROLES)
    with gr.Blocks():
        review = ReviewTab(service, login)
        team = TeamTab(service, login)
        agreement = AgreementSection(service, login)
    return review, team, agreement


@pytest.fixture
def question_set(tmp_path: Path) -> Path:
    path = tmp_path / "ward-questions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SET), encoding="utf-8")
    return path


def _import(team: TeamTab, path: Path, request=ADMIN, progress=None) -> str:
    calls = progress if progress is not None else []
    return team.imports.run(str(path), "", "", "ward", 5, request, progress=lambda f, desc=None: calls.append((f, desc)))


def _judgements(service, reviewer: str) -> list[Feedback]:
    return [j.feedback for j in service.ledger.judgements() if j.feedback.reviewer == reviewer]


def test_the_app_lays_out_the_queue_the_rubric_and_the_team_tab(service) -> None:
    demo = build_demo(service, ROLES)
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    expected = {
        "next-question", "skip-item", "queue-progress", "queue-item", "queue-reference", "import-file",
        "import-question-column", "import-reference-column", "import-batch", "import-priority", "import-button",
        "import-result", "adjudicate-item", "adjudicate-detail", "adjudicate-action", "adjudicate-button",
        "adjudicate-result", "export-kind", "export-button", "export-file", "export-result", "audit-table",
        "audit-pages", "agreement-alphas", "agreement-pairs", "agreement-reviewers", "rubric-counts",
    }  # fmt: skip
    assert expected <= ids, expected - ids
    assert {f"rubric-{axis.name}" for axis in service.rubric.axes} <= ids
    tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs.index("Team") == tabs.index("Review") + 1
    # Next may generate: it shares the model's queue with Ask.
    [next_event] = [d for d in demo.fns.values() if d.fn.__name__ == "next_item"]
    ask_events = [d for d in demo.fns.values() if d.fn.__name__ == "ask_stream"]
    assert {d.concurrency_id for d in [next_event, *ask_events]} == {"model"}
    assert next_event.concurrency_limit == ask_events[0].concurrency_limit and next_event.api_visibility == "private"


def test_next_fills_the_review_tab_and_a_judgement_moves_the_progress_line(service, ui, question_set) -> None:
    review, team, _ = ui
    assert _import(team, question_set).startswith("imported 2 question(s) from ward-questions.jsonl as batch 'ward'")
    queue = review.queue

    shown = queue.next_item(CLINICIAN)
    state = shown[review.current]
    item = service.queue.item(state["item_id"])
    assert item is not None and item.prompt == SET[0]["question"]  # priority 5 comes before the shipped set
    gen = service.generation(state["id"])
    assert state == {"id": gen.id, "version": gen.version, "candidates": gen.candidates, "item_id": item.id}
    assert shown[review.question] == gen.prompt == SET[0]["question"]
    assert shown[review.boxes[0]]["value"] == gen.candidates[0] and shown[review.boxes[0]]["visible"] is True
    assert shown[review.boxes[1]]["visible"] is False and shown[review.edit_box] == gen.candidates[0]
    assert shown[review.flags].startswith("**Safety checks**")
    assert "batch: ward" in shown[queue.item] and "specialty: orthopaedics" in shown[queue.item]
    assert shown[queue.reference_panel]["visible"] is True and shown[queue.reference] == SET[0]["answer"]
    queued = service.queue.size
    assert shown[queue.progress] == f"**Queue:** 0 done, 0 skipped, {queued} left of {queued} queued · 2 review(s) per item"

    # The rubric's ratings go with the judgement; the dropdowns then reset, and the line counts it done.
    ratings = ["agrees", None, "none", None, None, None]
    saved = review.accept(state, "1", "", CLINICIAN, *ratings)
    assert saved[review.result].startswith("Saved accept") and "by drlee" in saved[review.result]
    assert saved[queue.progress].startswith("**Queue:** 1 done, 0 skipped")
    assert all(saved[d]["value"] is None for d in review.rubric.dropdowns)
    [fb] = _judgements(service, "drlee")
    assert fb.generation_id == gen.id and fb.rubric == {"consensus": "agrees", "harm_extent": "none"}

    # A typed question is held without an item, and its judgement leaves the progress line alone.
    streamed = list(review.ask_stream("What is asthma?", 1, False, CLINICIAN))
    assert set(streamed[0]) == set(review.asked)  # the first update still clears every output
    typed = streamed[-1][review.current]
    assert typed["item_id"] is None
    assert queue.progress not in review.reject(typed, "1", "too vague", CLINICIAN, *[None] * 6)


def test_skip_frees_the_item_and_updates_the_progress_line(service, ui, question_set) -> None:
    review, team, _ = ui
    _import(team, question_set)
    state = review.queue.next_item(CLINICIAN)[review.current]
    skipped = review.queue.skip(state, CLINICIAN)
    assert "1 skipped" in skipped[review.queue.progress]
    assert skipped[review.current] is None and skipped[review.question] == ""
    assert skipped[review.queue.reference_panel]["visible"] is False
    with pytest.raises(UserError, match="no queued item to skip"):
        review.queue.skip(None, CLINICIAN)
    with pytest.raises(UserError, match="already skipped"):
        review.queue.skip(state, CLINICIAN)
    # The next item is the set's second question; the skipped one is not offered again.
    assert review.queue.next_item(CLINICIAN)[review.question] == SET[1]["question"]


def test_nothing_left_says_so(service, ui) -> None:
    review, _, _ = ui
    for item in service.queue.items():  # everything in the queue judged by two others
        service.queue.note_judged(item.id, "a")
        service.queue.note_judged(item.id, "b")
    empty = review.queue.next_item(CLINICIAN)
    assert empty[review.current] is None and "Nothing is left" in empty[review.queue.item]


def test_the_team_tab_refuses_a_clinician(service, ui, question_set) -> None:
    _, team, _ = ui
    assert team.sections(CLINICIAN) == {team.admin: {"__type__": "update", "visible": False},
                                         team.note: {"__type__": "update", "visible": True}}  # fmt: skip
    assert team.sections(ADMIN)[team.admin]["visible"] is True
    refused = [
        lambda: _import(team, question_set, CLINICIAN),
        lambda: team.adjudication.refresh(None, CLINICIAN),
        lambda: team.adjudication.settle("x", "accept", 1, "", "", CLINICIAN),
        lambda: team.export.run("raw", "", "", "", "", False, False, False, "other", CLINICIAN),
        lambda: team.audit.show("", "any", "", "", 1, CLINICIAN),
    ]
    for call in refused:
        with pytest.raises(PermissionDeniedError, match="only an admin"):
            call()
    with pytest.raises(gr.Error, match="only an admin may import"):
        user_errors(team.imports.run)(str(question_set), "", "", "", 0, CLINICIAN)
    assert service.queue.batches and all(b.name != "ward" for b in service.queue.batches.values())


def test_a_disagreement_is_settled_exported_and_audited(service, ui, question_set, tmp_path: Path) -> None:
    review, team, agreement = ui
    steps: list = []
    _import(team, question_set, progress=steps)
    assert steps and steps[-1][0] == pytest.approx(1.0)  # the service's progress reached Gradio's bar
    mine = review.queue.next_item(CLINICIAN)[review.current]
    theirs = review.queue.next_item(ADMIN)[review.current]
    assert mine["id"] == theirs["id"]  # both reviewers of an item judge the same candidates
    review.accept(mine, "1", "", CLINICIAN, *[None] * 6)
    review.reject(theirs, "1", "misses red flags", ADMIN, *[None] * 6)

    adjudication = team.adjudication
    listed = adjudication.refresh(None, ADMIN)
    assert [row[0] for row in listed[adjudication.table]] == [mine["item_id"][:8]]
    assert listed[adjudication.choice]["value"] == mine["item_id"]
    detail = listed[adjudication.detail]
    assert "| drlee | accept | 1 |" in detail and "| admin | reject | 1 |" in detail and "misses red flags" in detail
    with pytest.raises(UserError, match="single candidate"):
        adjudication.settle(mine["item_id"], "rank", 1, "1", "", ADMIN)
    settled = adjudication.settle(mine["item_id"], "accept", 1, "", "", ADMIN)
    assert settled.startswith(f"Settled item {mine['item_id'][:8]}: accept candidate 1")
    assert adjudication.refresh(mine["item_id"], ADMIN)[adjudication.table] == []

    # Export: a zip that holds the three judgements as raw rows.
    exported = team.export.run("raw", "ward", "", "", "", False, False, True, "cc-by-4.0", ADMIN)
    archive = Path(exported[team.export.file])
    assert archive.is_file() and archive.suffix == ".zip"
    assert exported[team.export.result].startswith("Exported 3 raw row(s) from 3 judgement(s) by 2 reviewer(s)")
    with zipfile.ZipFile(archive) as z:
        rows = [json.loads(line) for line in z.read("raw-dataset/data/train.jsonl").decode().splitlines()]
        assert "license: cc-by-4.0" in z.read("raw-dataset/README.md").decode()
    assert sorted(r["action"] for r in rows) == ["accept", "accept", "reject"]
    assert [r["settles"] for r in rows if r["reviewer"] == "admin" and r["action"] == "accept"] == [mine["item_id"]]
    with pytest.raises(UserError, match="export filter is unusable: since"):
        team.export.run("raw", "", "", "last week", "", False, False, False, "other", ADMIN)
    with pytest.raises(UserError, match="after 'until'"):
        team.export.run("raw", "", "", "2026-12-01", "2026-11-01", False, False, False, "other", ADMIN)

    # Agreement: one pair that disagreed on the item's one candidate.
    tables = agreement.refresh(ADMIN)
    assert tables[agreement.pairs].values.tolist() == [["admin", "drlee", 0.0, 1]]  # no agreement beyond chance
    assert tables[agreement.alphas].iloc[0]["scope"] == "team" and tables[agreement.alphas].iloc[0]["items"] == 1
    counts = tables[agreement.rubric]
    assert counts.empty  # nothing was rated

    audit = team.audit.show("admin", "adjudication", "", "", 1, ADMIN)
    assert [row[1:3] for row in audit[team.audit.table]] == [["admin", "adjudication"]]
    assert audit[team.audit.pages] == "Page 1 of 1 · 1 event(s)"


def test_the_audit_table_holds_one_page(service, ui) -> None:
    _, team, _ = ui
    gen = service.ask("What is asthma?", Caller("drlee"))
    # Sixty judgements, stored directly: the audit log pages them server-side, fifty at a time.
    for i in range(60):
        service.store.append(Feedback(reviewer="drlee", generation_id=gen.id, action="reject", reason=f"reason {i}"))
    first = team.audit.show("drlee", "judgement", "", "", 1, ADMIN)
    assert len(first[team.audit.table]) == 50 and first[team.audit.pages] == "Page 1 of 2 · 60 event(s)"
    second = team.audit.show("drlee", "judgement", "", "", 2, ADMIN)
    assert len(second[team.audit.table]) == 10 and second[team.audit.pages].startswith("Page 2 of 2")
    with pytest.raises(UserError, match="past the last page"):
        team.audit.show("drlee", "judgement", "", "", 3, ADMIN)


def test_rubric_counts_per_version_reach_the_dashboard(service, ui) -> None:
    review, _, agreement = ui
    state = list(review.ask_stream("What is asthma?", 1, False, CLINICIAN))[-1][review.current]
    review.reject(state, "1", "wrong", CLINICIAN, "opposed", None, None, "major", None, None)
    counts = agreement.refresh(CLINICIAN)[agreement.rubric]
    rows = {(r.axis, r.level): r.ratings for r in counts.itertuples() if r.version == "base"}
    assert rows[("consensus", "opposed")] == 1 and rows[("inaccurate", "major")] == 1 and rows[("consensus", "agrees")] == 0


def test_rankings_are_typed_from_1_and_sent_from_0() -> None:
    assert zero_based_order("2 > 1 = 3") == "1 > 0 = 2"
    assert zero_based_order(" none ") == "none"
    for bad, message in (("0 > 1", "numbered from 1"), ("first", "cannot read"), ("", "cannot read")):
        with pytest.raises(UserError, match=message):
            zero_based_order(bad)
