"""FeedbackStore and FeedbackLedger: durable appends, torn and corrupt lines, cursors, indexing.

Nothing here loads a model; every test works on a fresh ``feedback/`` folder under tmp_path.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from hitl_app.core.errors import NotFoundError
from hitl_app.feedback.ledger import FeedbackLedger
from hitl_app.feedback.records import Feedback, Generation, Sampling
from hitl_app.feedback.store import FEEDBACK_FILE, CorruptLine, FeedbackStore

SAMPLING = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8)


def make_generation(prompt: str = "What is the first-line treatment for hypertension?", **fields) -> Generation:
    """A valid generation with one candidate answer."""
    values = dict(
        reviewer="dr-a",
        prompt=prompt,
        system_prompt="You are a careful medical assistant.",
        candidates=["An ACE inhibitor or a thiazide."],
        version="base",
        sampling=SAMPLING,
        prompt_tokens=12,
    )
    values.update(fields)
    return Generation(**values)


def make_feedback(generation: Generation, action: str = "accept", **fields) -> Feedback:
    """A valid feedback record judging ``generation``."""
    values: dict = dict(reviewer="dr-a", generation_id=generation.id, action=action)
    if action == "edit":
        values["text"] = "Corrected answer."
    if action == "reject":
        values["reason"] = "Unsafe."
    values.update(fields)
    return Feedback(**values)


def _append_worker(directory: str, worker: int, pairs: int) -> None:
    """Child-process body: append ``pairs`` generation+feedback pairs through its own store.

    Writes the offset append() returned for each record id to ``offsets-<worker>.json`` so the
    parent can check them. Module-level so the "spawn" context can pickle it by reference.
    """
    store = FeedbackStore(Path(directory))
    offsets: dict[str, int] = {}
    for i in range(pairs):
        gen = make_generation(prompt=f"worker {worker} question {i}")
        offsets[gen.id] = store.append(gen)
        fb = make_feedback(gen)
        offsets[fb.id] = store.append(fb)
    (Path(directory) / f"offsets-{worker}.json").write_text(json.dumps(offsets), encoding="utf-8")


def _assert_intact(store: FeedbackStore, expected: int) -> None:
    """Every record is present exactly once and every line parses."""
    result = store.read()
    assert result.corrupt == []
    assert len(result.records) == expected
    ids = [record.id for _, record in result.records]
    assert len(set(ids)) == expected, "a record was written twice"
    offsets = [offset for offset, _ in result.records]
    assert offsets == sorted(offsets) and len(set(offsets)) == expected
    # Every line ends with a newline: no two appends were interleaved into one line.
    raw = store.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == expected
    assert result.cursor == len(raw)


# ----- concurrency -----


def test_concurrent_appends_from_processes_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """4 processes x 50 records (25 generation+feedback pairs each), all through the file lock."""
    directory = tmp_path / "feedback"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_worker, args=(str(directory), w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]

    store = FeedbackStore(directory)
    _assert_intact(store, 200)
    # The offset each append() reported is where its record really starts (the lock spans
    # finding the end of the file and writing there).
    reported: dict[str, int] = {}
    for w in range(4):
        reported.update(json.loads((directory / f"offsets-{w}.json").read_text(encoding="utf-8")))
    assert reported == {record.id: offset for offset, record in store.read().records}
    ledger = FeedbackLedger(store)
    ledger.refresh()
    assert ledger.generations_total == 100
    assert ledger.count() == 100  # every feedback found its generation


def test_concurrent_appends_from_threads_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """8 threads share one store; the thread lock keeps their lines whole."""
    store = FeedbackStore(tmp_path / "feedback")
    errors: list[BaseException] = []

    def body(worker: int) -> None:
        try:
            for i in range(25):
                store.append(make_generation(prompt=f"thread {worker} question {i}"))
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    _assert_intact(store, 200)


def test_append_returns_the_offset_where_the_line_starts(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    offsets = [store.append(make_generation(prompt=f"q{i}")) for i in range(3)]
    raw = store.path.read_bytes()
    assert offsets[0] == 0
    for offset in offsets[1:]:
        assert raw[offset - 1 : offset] == b"\n"
    assert [o for o, _ in store.read().records] == offsets


# ----- torn and corrupt lines -----


def test_torn_tail_is_left_for_later_then_reported_once_a_record_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    first = make_generation(prompt="before the crash")
    store.append(first)
    clean_end = store.path.stat().st_size
    # A crash mid-write: half a JSON line and no newline.
    with open(store.path, "ab") as f:
        f.write(b'{"kind": "generation", "prompt": "half wri')

    pending = store.read()
    assert [r.id for _, r in pending.records] == [first.id]
    assert pending.corrupt == []  # it may still be being written
    assert pending.cursor == clean_end  # stops before the torn line

    second = make_generation(prompt="after the restart")
    offset = store.append(second)
    assert store.path.read_bytes()[offset:].startswith(b"{")  # began on a fresh line

    with caplog.at_level(logging.WARNING, logger="hitl_app.feedback.store"):
        after = store.read(pending.cursor)
    assert [r.id for _, r in after.records] == [second.id]
    assert len(after.corrupt) == 1
    assert isinstance(after.corrupt[0], CorruptLine)
    assert after.corrupt[0].offset == clean_end
    assert after.corrupt[0].error
    assert f"byte {clean_end}" in caplog.text

    everything = store.read()
    assert [r.id for _, r in everything.records] == [first.id, second.id]
    assert [c.offset for c in everything.corrupt] == [clean_end]


@pytest.mark.parametrize(
    "bad_line",
    [
        pytest.param(b"this is not json", id="invalid-json"),
        pytest.param(b'{"kind": "generation", "prompt": "no other fields"}', id="schema-invalid"),
        pytest.param(b'{"kind": "verdict", "reviewer": "x"}', id="unknown-kind"),
        pytest.param(b"[1, 2, 3]", id="json-not-an-object"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
def test_corrupt_line_in_the_middle_is_skipped_and_reported(tmp_path: Path, bad_line: bytes) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    before = make_generation(prompt="before")
    store.append(before)
    bad_offset = store.path.stat().st_size
    with open(store.path, "ab") as f:
        f.write(bad_line + b"\n")
    after = make_generation(prompt="after")
    store.append(after)

    result = store.read()
    assert [r.id for _, r in result.records] == [before.id, after.id]
    assert [c.offset for c in result.corrupt] == [bad_offset]
    assert result.cursor == store.path.stat().st_size


def test_blank_lines_are_neither_records_nor_corrupt(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    store.append(make_generation())
    with open(store.path, "ab") as f:
        f.write(b"\n  \n")
    store.append(make_generation())
    result = store.read()
    assert len(result.records) == 2 and result.corrupt == []


def test_ledger_counts_corrupt_lines(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    gen = make_generation()
    store.append(gen)
    with open(store.path, "ab") as f:
        f.write(b"garbage\n{}\n")
    store.append(make_feedback(gen))
    ledger = FeedbackLedger(store)
    ledger.refresh()
    assert len(ledger.corrupt) == 2
    assert ledger.count() == 1
    ledger.refresh()  # a second refresh reads nothing new, so nothing is counted twice
    assert len(ledger.corrupt) == 2


# ----- cursors -----


def test_read_from_a_cursor_returns_only_later_records(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    early = [make_generation(prompt=f"early {i}") for i in range(3)]
    for record in early:
        store.append(record)
    first = store.read()
    assert [r.id for _, r in first.records] == [r.id for r in early]

    late = [make_generation(prompt=f"late {i}") for i in range(2)]
    for record in late:
        store.append(record)
    second = store.read(first.cursor)
    assert [r.id for _, r in second.records] == [r.id for r in late]
    assert second.records[0][0] == first.cursor

    # From the end there is nothing, and the cursor stays put.
    third = store.read(second.cursor)
    assert third.records == [] and third.corrupt == []
    assert third.cursor == second.cursor == store.path.stat().st_size


def test_read_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    result = store.read(0)
    assert (result.records, result.cursor, result.corrupt) == ([], 0, [])


def test_read_from_every_record_offset_resumes_there(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    records = [make_generation(prompt=f"q{i}") for i in range(4)]
    offsets = [store.append(r) for r in records]
    for i, offset in enumerate(offsets):
        assert [r.id for _, r in store.read(offset).records] == [r.id for r in records[i:]]


# ----- validation -----


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param(dict(action="edit"), "an edit needs the corrected text", id="edit-without-text"),
        pytest.param(dict(action="edit", text="   "), "an edit needs the corrected text", id="edit-blank-text"),
        pytest.param(dict(action="reject"), "a rejection needs a reason", id="reject-without-reason"),
        pytest.param(dict(action="accept", text="x"), "takes no edited text", id="accept-with-text"),
        pytest.param(dict(action="maybe"), "action", id="unknown-action"),
        pytest.param(dict(action="accept", reviewer=""), "reviewer", id="empty-reviewer"),
        pytest.param(dict(action="accept", candidate=-1), "candidate", id="negative-candidate"),
    ],
)
def test_invalid_feedback_cannot_be_constructed(fields: dict, message: str) -> None:
    values = dict(reviewer="dr-a", generation_id="g1")
    values.update(fields)
    with pytest.raises(ValidationError, match=message):
        Feedback(**values)


def test_append_rejects_an_invalid_record_and_leaves_the_file_unchanged(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    store.append(make_generation())
    before = store.path.read_bytes()
    # model_construct skips validation, so this is how an invalid record could reach append().
    bogus = Feedback.model_construct(
        reviewer="dr-a", generation_id="g1", action="edit", text=None, reason=None, candidate=0
    )
    with pytest.raises(ValidationError, match="an edit needs the corrected text"):
        store.append(bogus)
    assert store.path.read_bytes() == before


def test_records_round_trip_unchanged(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    gen = make_generation(prompt="Dosage of paracetamol? \u2028 caf\u00e9 \r\n line", candidates=["a", "b"])
    fb = make_feedback(gen, "edit", candidate=1)
    store.append(gen)
    store.append(fb)
    assert [r for _, r in store.read().records] == [gen, fb]
    assert store.path.name == FEEDBACK_FILE
    # One JSON object per b"\n"-terminated line, even with U+2028 (str.splitlines would split it).
    lines = store.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert len(lines) == 3


# ----- the ledger -----


def test_ledger_looks_up_generations(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    gen = make_generation()
    store.append(gen)
    ledger = FeedbackLedger(store)
    # No explicit refresh: an unknown id triggers one before giving up.
    assert ledger.generation(gen.id) == gen
    assert ledger.generations_total == 1


def test_ledger_unknown_generation_raises_a_clear_not_found(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    store.append(make_generation())
    ledger = FeedbackLedger(store)
    with pytest.raises(NotFoundError, match=r"unknown generation id 'nope'.*ask a question first"):
        ledger.generation("nope")


@pytest.mark.parametrize("split", [0, 1, 2, 3, 4])
def test_ledger_judgements_and_count_after_an_offset(tmp_path: Path, split: int) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    gens = [make_generation(prompt=f"q{i}") for i in range(4)]
    feedback_offsets: list[int] = []
    feedbacks: list[Feedback] = []
    for gen, action in zip(gens, ["accept", "edit", "reject", "accept"]):
        store.append(gen)
        fb = make_feedback(gen, action)
        feedbacks.append(fb)
        feedback_offsets.append(store.append(fb))
    ledger = FeedbackLedger(store)
    ledger.refresh()

    after = feedback_offsets[split] if split < 4 else store.path.stat().st_size
    judged = ledger.judgements(after=after)
    assert [j.feedback.id for j in judged] == [f.id for f in feedbacks[split:]]
    assert [j.offset for j in judged] == feedback_offsets[split:]
    assert all(j.generation.id == j.feedback.generation_id for j in judged)
    assert ledger.count(after=after) == 4 - split
    assert ledger.count() == 4


def test_ledger_refresh_sees_appends_from_another_store_instance(tmp_path: Path) -> None:
    directory = tmp_path / "feedback"
    reader_store, writer_store = FeedbackStore(directory), FeedbackStore(directory)
    ledger = FeedbackLedger(reader_store)
    ledger.refresh()
    assert ledger.count() == 0 and ledger.cursor == 0

    gen = make_generation()
    writer_store.append(gen)
    writer_store.append(make_feedback(gen))
    assert ledger.count() == 0  # nothing is read until refresh
    ledger.refresh()
    assert ledger.count() == 1
    assert ledger.generation(gen.id) == gen
    assert ledger.cursor == directory.joinpath(FEEDBACK_FILE).stat().st_size

    gen2 = make_generation(prompt="second")
    writer_store.append(gen2)
    writer_store.append(make_feedback(gen2, "reject"))
    ledger.refresh()
    assert [j.feedback.action for j in ledger.judgements()] == ["accept", "reject"]


def test_ledger_keeps_feedback_that_arrives_before_its_generation(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    gen = make_generation()
    fb = make_feedback(gen)
    store.append(fb)  # out of order, as another process might write it
    ledger = FeedbackLedger(store)
    ledger.refresh()
    assert ledger.count() == 0
    store.append(gen)
    ledger.refresh()
    assert [j.feedback.id for j in ledger.judgements()] == [fb.id]
