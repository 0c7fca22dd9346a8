"""The store's fast read path: the same records, offsets, cursor and corrupt lines as the reference
read (``json.loads`` + ``validate_python`` per line), incremental reads, and the collector pause.

Every test works on a tiny ``feedback/`` folder under tmp_path; bulk reads are forced by lowering
``BULK_READ_BYTES``, so no test needs a large store and none asserts a time.
"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

import hitl_app.feedback.store as store_module
from hitl_app.bench.store_read import ACTIONS, reference_read, write_synthetic_store
from hitl_app.feedback.ledger import FeedbackLedger
from hitl_app.feedback.records import RECORD_ADAPTER, Feedback, Generation, SafetyFlag, Sampling
from hitl_app.feedback.store import FeedbackStore, ReadResult, parse_record

SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64)
FLAG = SafetyFlag(kind="overdose", severity="high", explanation="above the adult daily maximum")


def generation(prompt: str = "What is the usual adult dose of amoxicillin?", **fields) -> Generation:
    values: dict = dict(
        reviewer="dr-a",
        prompt=prompt,
        system_prompt="You are a careful medical assistant.",
        candidates=["500 mg three times a day.", "250 mg \u2028 caf\u00e9 twice a day."],
        version="v0003",
        sampling=SAMPLING,
        prompt_tokens=14,
        flags=[[], [FLAG]],
        redactions={"phone": 1},
    )
    values.update(fields)
    return Generation(**values)


def judgements_of(gen: Generation) -> list[Feedback]:
    """One judgement of every kind the app stores."""
    base = dict(reviewer="dr-b", generation_id=gen.id)
    return [
        Feedback(**base, action="accept", candidate=1, override_reason="Checked the dose by hand."),
        Feedback(**base, action="edit", text="500 mg every 8 hours for 5 days.", flags=[FLAG]),
        Feedback(**base, action="rank", ranking=[[1], [0]]),
        Feedback(**base, action="rank", ranking=[]),
        Feedback(**base, action="vote", ranking=[[0, 1]]),
        Feedback(**base, action="reject", reason="Misses the penicillin allergy question."),
    ]


def append_raw(store: FeedbackStore, data: bytes) -> int:
    """Append bytes as they are (a torn or corrupt line); returns where they start."""
    with open(store.path, "ab") as f:
        offset = f.tell()
        f.write(data)
    return offset


@pytest.fixture(params=["small-read", "bulk-read"])
def bulk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Run a test once as a small read and once as a bulk read (collector paused)."""
    is_bulk = request.param == "bulk-read"
    monkeypatch.setattr(store_module, "BULK_READ_BYTES", 0 if is_bulk else 1 << 40)
    yield is_bulk
    assert gc.isenabled()


def messy_store(tmp_path: Path) -> FeedbackStore:
    """A store with every kind of record and every kind of bad line between them."""
    store = FeedbackStore(tmp_path / "feedback")
    first = generation()
    store.append(first)
    for fb in judgements_of(first):
        store.append(fb)
    compare = generation(
        prompt="Is ibuprofen safe with warfarin?", purpose="compare", candidate_versions=["v0002", "v0003"]
    )
    store.append(compare)
    append_raw(store, b"this is not json\n")  # corrupt middle line
    append_raw(store, b"\xff\xfe\x00 not utf-8\n")
    append_raw(store, b'{"kind": "generation", "prompt": "no other fields"}\n')  # an invalid record
    append_raw(store, b'{"kind": "feedback", "reviewer": "x", "generation_id": "g", "action": "edit"}\n')
    append_raw(store, b"\n   \n")  # blank lines
    line = generation(prompt="surrounded by whitespace").model_dump_json().encode()
    append_raw(store, b" \t" + line + b" \r\n")
    append_raw(store, b"\x0c" + generation(prompt="after a form feed").model_dump_json().encode() + b"\n")
    store.append(Feedback(reviewer="dr-c", generation_id=compare.id, action="vote", ranking=[[1], [0]]))
    append_raw(store, b'{"kind": "generation", "prompt": "torn mid-wri')  # torn last line, no newline
    return store


def test_the_fast_read_gives_exactly_the_reference_result(tmp_path: Path, bulk: bool) -> None:
    store = messy_store(tmp_path)
    expected = reference_read(store)
    got = store.read()
    assert got.records == expected.records
    assert [o for o, _ in got.records] == [o for o, _ in expected.records]
    assert [r.model_fields_set for _, r in got.records] == [r.model_fields_set for _, r in expected.records]
    assert got.corrupt == expected.corrupt  # same offsets and the same error text
    assert got.cursor == expected.cursor < store.path.stat().st_size  # the torn tail is left for later
    assert len(got.records) == 11 and len(got.corrupt) == 4


def test_a_torn_tail_is_read_once_it_is_finished(tmp_path: Path, bulk: bool) -> None:
    store = messy_store(tmp_path)
    first = store.read()
    late = generation(prompt="after the restart")
    store.append(late)  # closes the torn line, which then is corrupt, and starts on a fresh line
    expected, got = reference_read(store, first.cursor), store.read(first.cursor)
    assert (got.records, got.corrupt, got.cursor) == (expected.records, expected.corrupt, expected.cursor)
    assert [r.id for _, r in got.records] == [late.id]
    assert [c.offset for c in got.corrupt] == [first.cursor]


def test_reading_from_any_offset_matches_the_reference(tmp_path: Path, bulk: bool) -> None:
    store = messy_store(tmp_path)
    for offset, _ in reference_read(store).records:
        expected, got = reference_read(store, offset), store.read(offset)
        assert (got.records, got.corrupt, got.cursor) == (expected.records, expected.corrupt, expected.cursor)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"[1, 2, 3]", id="json-not-an-object"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"kind": "verdict", "reviewer": "x"}', id="unknown-kind"),
        pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
        pytest.param(b"\xc0\xaf", id="overlong-utf8"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-values"),
        pytest.param(b'{"a": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b"NaN", id="bare-nan"),
    ],
)
def test_a_rejected_line_fails_with_the_reference_error(line: bytes) -> None:
    """The error text is the reference's (json's or pydantic's python-mode message), not pydantic's JSON one."""
    with pytest.raises(Exception) as reference:
        RECORD_ADAPTER.validate_python(json.loads(line.decode("utf-8")))
    with pytest.raises(type(reference.value)) as got:
        parse_record(line)
    assert str(got.value) == str(reference.value)


def _variants() -> list[tuple[str, bytes]]:
    """Lines where JSON parsing and python-mode validation could plausibly disagree."""
    gen = generation().model_dump_json().encode()
    fb = judgements_of(generation())[2].model_dump_json().encode()
    stamp = json.dumps(json.loads(gen)["created_at"]).encode()
    return [
        ("as-written", gen),
        ("duplicate-key", gen.replace(b'"version":"v0003"', b'"version":"v0001","version":"v0003"')),
        ("tab-in-string", gen.replace(b'"v0003"', b'"v\t3"')),
        ("nul-in-string", gen.replace(b'"v0003"', b'"v\x003"')),
        ("escaped-surrogate-pair", gen.replace(b'"v0003"', b'"\\ud83d\\ude00"')),
        ("int-as-string", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":"14"')),
        ("int-as-float", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":14.0')),
        ("int-as-fraction", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":14.5')),
        ("int-as-bool", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":true')),
        ("huge-int", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":123456789012345678901234567890')),
        ("float-as-string", gen.replace(b'"temperature":0.7', b'"temperature":"0.7"')),
        ("float-overflow", gen.replace(b'"temperature":0.7', b'"temperature":1e400')),
        ("infinity", gen.replace(b'"temperature":0.7', b'"temperature":Infinity')),
        ("bool-as-string", gen.replace(b'"do_sample":true', b'"do_sample":"yes"')),
        ("bool-as-int", gen.replace(b'"do_sample":true', b'"do_sample":1')),
        ("time-as-number", gen.replace(stamp, b"1735689600")),
        ("time-without-zone", gen.replace(stamp, b'"2025-01-01T00:00:00"')),
        ("time-with-offset", gen.replace(stamp, b'"2025-01-01T02:00:00+02:00"')),
        ("extra-field", gen.replace(b'"version":"v0003"', b'"version":"v0003","extra":1')),
        ("string-as-number", gen.replace(b'"version":"v0003"', b'"version":3')),
        ("ranking-as-floats", fb.replace(b"[[1],[0]]", b"[[1.0],[0]]")),
        ("ranking-negative", fb.replace(b"[[1],[0]]", b"[[-1],[0]]")),
        ("leading-zero", gen.replace(b'"prompt_tokens":14', b'"prompt_tokens":014')),
        ("trailing-comma", gen[:-1] + b",}"),
        ("deeply-nested", gen[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ]


@pytest.mark.parametrize(("name", "line"), _variants(), ids=[name for name, _ in _variants()])
def test_parse_record_accepts_and_rejects_what_the_reference_does(name: str, line: bytes) -> None:
    try:
        expected: object = RECORD_ADAPTER.validate_python(json.loads(line.decode("utf-8")))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and ValidationError are ValueErrors
        expected = exc
    if isinstance(expected, BaseException):
        with pytest.raises(store_module.CORRUPT_LINE_ERRORS):
            parse_record(line)
    else:
        got = parse_record(line)
        assert got == expected
        assert got.model_fields_set == expected.model_fields_set
        assert got.model_dump_json() == expected.model_dump_json()


def test_a_line_too_deep_for_json_is_corrupt_not_fatal(tmp_path: Path, bulk: bool) -> None:
    """``json.loads`` raises RecursionError on it; the reference read let that stop the whole read."""
    store = FeedbackStore(tmp_path / "feedback")
    store.append(generation())
    deep = append_raw(store, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    store.append(generation(prompt="after"))
    result = store.read()
    assert [c.offset for c in result.corrupt] == [deep]
    assert len(result.records) == 2


def test_incremental_refresh_parses_only_new_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeedbackStore(tmp_path / "feedback")
    parsed: list[bytes] = []

    def counting(line: bytes, adapter=store_module.RECORD_ADAPTER) -> Generation | Feedback:
        parsed.append(line)
        return parse_record(line, adapter)

    monkeypatch.setattr(store_module, "parse_record", counting)
    gens = [generation(prompt=f"q{i}") for i in range(3)]
    for gen in gens:
        store.append(gen)
        store.append(judgements_of(gen)[1])
    ledger = FeedbackLedger(store)
    ledger.refresh()
    assert len(parsed) == 6 and ledger.count() == 3

    parsed.clear()
    late = generation(prompt="late")
    rejection = judgements_of(late)[5]
    store.append(late)
    offset = store.append(rejection)
    ledger.refresh()
    assert [json.loads(line)["id"] for line in parsed] == [late.id, rejection.id]
    assert ledger.count() == 4 and ledger.count(after=offset) == 1
    assert ledger.cursor == store.path.stat().st_size

    parsed.clear()
    ledger.refresh()  # nothing new: nothing parsed, nothing counted twice
    assert parsed == [] and ledger.count() == 4


def test_a_bulk_read_pauses_the_collector_and_a_small_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = messy_store(tmp_path)
    seen: list[bool] = []

    def watching(line: bytes, adapter=store_module.RECORD_ADAPTER) -> Generation | Feedback:
        seen.append(gc.isenabled())
        return parse_record(line, adapter)

    monkeypatch.setattr(store_module, "parse_record", watching)
    whole = reference_read(store).cursor  # every complete line: the torn tail is not read
    monkeypatch.setattr(store_module, "BULK_READ_BYTES", whole)  # so reading it all is just bulk
    store.read()
    assert seen and not any(seen)
    assert gc.isenabled()

    seen.clear()
    first_offset = reference_read(store).records[1][0]
    store.read(first_offset)  # less than BULK_READ_BYTES: the collector keeps running
    assert seen and all(seen)


def test_the_collector_is_restored_after_a_failed_bulk_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = messy_store(tmp_path)

    def failing(line: bytes, adapter=None) -> Generation | Feedback:
        raise OSError("disk gone")

    monkeypatch.setattr(store_module, "parse_record", failing)
    monkeypatch.setattr(store_module, "BULK_READ_BYTES", 0)
    with pytest.raises(OSError, match="disk gone"):
        store.read()
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = messy_store(tmp_path)
    monkeypatch.setattr(store_module, "BULK_READ_BYTES", 0)
    gc.disable()
    try:
        assert len(store.read().records) == 11
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_concurrent_bulk_reads_share_one_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one thread's bulk read is still parsing, another's ends: the collector stays paused
    until the last one is done, then runs again."""
    store = messy_store(tmp_path)
    monkeypatch.setattr(store_module, "BULK_READ_BYTES", 0)
    inside, release = threading.Event(), threading.Event()
    during: list[bool] = []

    def slow(line: bytes, adapter=store_module.RECORD_ADAPTER) -> Generation | Feedback:
        if threading.current_thread().name == "slow-reader" and not inside.is_set():
            inside.set()
            assert release.wait(10)
            during.append(gc.isenabled())
        return parse_record(line, adapter)

    monkeypatch.setattr(store_module, "parse_record", slow)
    results: list[ReadResult] = []
    reader = threading.Thread(target=lambda: results.append(store.read()), name="slow-reader")
    reader.start()
    try:
        assert inside.wait(10)
        assert len(store.read().records) == 11  # the fast reader enters and leaves the pause
        assert not gc.isenabled()  # the slow reader is still inside it
    finally:
        release.set()
        reader.join(10)
    assert during == [False] and len(results[0].records) == 11
    assert gc.isenabled()


def test_the_benchmark_store_is_valid_seeded_and_has_every_action(tmp_path: Path) -> None:
    path = write_synthetic_store(tmp_path / "a", 41, seed=3)
    result = FeedbackStore(path.parent).read()
    assert result.corrupt == [] and len(result.records) == 41
    kinds = [record.kind for _, record in result.records]
    assert kinds.count("generation") == 21 and kinds.count("feedback") == 20
    assert {r.action for _, r in result.records if isinstance(r, Feedback)} == set(ACTIONS)
    assert all(len(r.candidates) == 2 for _, r in result.records if isinstance(r, Generation))
    # Lines are exactly what FeedbackStore.append writes: model_dump_json and a newline.
    assert path.read_bytes() == b"".join(r.model_dump_json().encode() + b"\n" for _, r in result.records)
    assert write_synthetic_store(tmp_path / "b", 41, seed=3).read_bytes() == path.read_bytes()
    ledger = FeedbackLedger(FeedbackStore(path.parent))
    ledger.refresh()
    assert ledger.count() == 20 and ledger.generations_total == 21
