"""The dataset export: every kind written as Parquet, JSONL and a card that ``load_dataset`` reads,
filters, held-out marking, reviewer pseudonyms, folder safety, and a TRL DPO step on the result."""

from __future__ import annotations

import json
import math
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hitl_app.core.errors import UserError
from hitl_app.feedback.export import CardInfo, ExportEntry, ExportFilter, export_dataset, zip_export
from hitl_app.feedback.ledger import Judgement
from hitl_app.feedback.records import Feedback, Generation, Sampling
from hitl_app.feedback.training_rows import rows_for
from tests.helpers import one_dpo_step

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=64)
SYSTEM = "You are a careful medical assistant."
META = ["reviewer", "batch", "held_out"]
COLUMNS = {
    "sft": ["record_id", "messages", *META],
    "dpo": ["record_id", "prompt", "chosen", "rejected", *META],
    "reward": ["record_id", "prompt", "chosen", "rejected", *META],
    "kto": ["record_id", "prompt", "completion", "label", *META],
}


def judgement(
    offset: int, action: str, reviewer: str, candidates: list[str], system: str | None = None, **kw
) -> Judgement:
    gen = Generation(
        reviewer=reviewer, prompt=f"Question {offset}: how is hypertension treated?", system_prompt=system,
        candidates=candidates, version="v0002", sampling=SAMPLING, prompt_tokens=12, created_at=T0,
        redactions={"name": 1},
    )
    fb = Feedback(
        reviewer=reviewer, generation_id=gen.id, action=action, created_at=T0 + timedelta(minutes=10 * offset), **kw
    )
    return Judgement(offset, fb, gen)


@pytest.fixture
def entries() -> list[ExportEntry]:
    """Five judgements: accept, edit, reject, a three-way ranking, and a held-out edit."""
    accept = judgement(0, "accept", "drlee", ["Start with a thiazide."], system=SYSTEM)
    edit = judgement(1, "edit", "drkim", ["Use an inhaler."], text="Use a reliever inhaler.", redactions={"phone": 2})
    reject = judgement(2, "reject", "drlee", ["Take 10 g paracetamol."], reason="overdose")
    three = ["A fair answer.", "A poor answer.", "The best answer."]
    rank = judgement(3, "rank", "drpat", three, ranking=[[2], [0, 1]], rubric={"accuracy": "high"})
    held = judgement(4, "edit", "drkim", ["Rest."], text="Call emergency services now.")
    return [
        ExportEntry(accept, "b1", "Cardiology", "i1", True, False),
        ExportEntry(edit, "b2", "Asthma", "i2", False, False),
        ExportEntry(reject, None, None, None, None, False),
        ExportEntry(rank, "b1", "Cardiology", "i3", True, False),
        ExportEntry(held, "b1", "Cardiology", "i4", True, True),
    ]


def ids(entries: list[ExportEntry], *which: int) -> set[str]:
    return {entries[i].judgement.feedback.id for i in which}


def load(out: Path, cache: Path | None = None):
    import datasets

    return datasets.load_dataset(str(out), cache_dir=str(cache or out.parent / f"cache-{uuid.uuid4().hex}"))["train"]


@pytest.mark.parametrize(("kind", "rows", "records"), [
    ("sft", 2, (0, 1)), ("dpo", 3, (1, 3)), ("reward", 3, (1, 3)), ("kto", 3, (0, 1, 2)), ("raw", 4, (0, 1, 2, 3)),
])
def test_every_kind_writes_parquet_jsonl_and_a_loadable_card(entries, tmp_path: Path, kind, rows, records) -> None:
    out = tmp_path / "export"
    summary = export_dataset(kind, entries, out)

    assert summary.files == ["README.md", "data/train.parquet", "data/train.jsonl"]
    assert all((out / f).is_file() for f in summary.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary sibling left
    ds = load(out)
    assert (summary.rows, summary.judgements, len(ds)) == (rows, len(records), rows)
    if kind in COLUMNS:
        assert ds.column_names == COLUMNS[kind]
    assert set(ds["record_id"]) == ids(entries, *records)
    assert not any(ds["held_out"])
    jsonl = [json.loads(line) for line in (out / "data/train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert jsonl == ds.to_list()  # the same rows in both files


def test_sft_rows_are_whole_conversations(entries, tmp_path: Path) -> None:
    export_dataset("sft", entries, tmp_path / "x")
    accept, edit = load(tmp_path / "x").to_list()
    assert accept["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Question 0: how is hypertension treated?"},
        {"role": "assistant", "content": "Start with a thiazide."},
    ]
    assert edit["messages"][1:] == [{"role": "assistant", "content": "Use a reliever inhaler."}]
    assert [r["batch"] for r in (accept, edit)] == ["Cardiology", "Asthma"]


@pytest.mark.parametrize("kind", ["dpo", "reward"])
def test_preference_rows_are_exactly_the_training_rows(entries, tmp_path: Path, kind: str) -> None:
    export_dataset(kind, entries, tmp_path / "x")
    got = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in load(tmp_path / "x")]
    assert got == rows_for(entries[1].judgement).dpo + rows_for(entries[3].judgement).dpo
    assert [r["chosen"][0]["content"] for r in got[1:]] == ["The best answer."] * 2


def test_kto_rows_carry_labels(entries, tmp_path: Path) -> None:
    export_dataset("kto", entries, tmp_path / "x")
    rows = load(tmp_path / "x").to_list()
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("Start with a thiazide.", True), ("Use an inhaler.", False), ("Take 10 g paracetamol.", False)
    ]


def test_raw_rows_are_flat(entries, tmp_path: Path) -> None:
    export_dataset("raw", entries, tmp_path / "x")
    rows = {r["action"]: r for r in load(tmp_path / "x")}
    rank, edit, reject = rows["rank"], rows["edit"], rows["reject"]
    fb = entries[3].judgement.feedback
    assert (rank["record_id"], rank["generation_id"]) == (fb.id, fb.generation_id)
    assert datetime.fromisoformat(rank["created_at"]) == fb.created_at
    assert json.loads(rank["ranking"]) == [[2], [0, 1]] and json.loads(rank["rubric"]) == {"accuracy": "high"}
    assert rank["candidates"] == ["A fair answer.", "A poor answer.", "The best answer."]
    assert (rank["batch_id"], rank["batch_name"], rank["item_id"], rank["resolved"]) == ("b1", "Cardiology", "i3", True)
    assert (edit["text"], edit["ranking"], edit["version"]) == ("Use a reliever inhaler.", None, "v0002")
    assert json.loads(edit["redactions"]) == {"name": 1, "phone": 2}
    assert (reject["reason"], reject["resolved"], reject["batch"]) == ("overdose", None, None)


def test_held_out_is_left_out_unless_asked_and_then_marked(entries, tmp_path: Path) -> None:
    default = export_dataset("dpo", entries, tmp_path / "a")
    assert default.held_out_rows == 0 and ids(entries, 4).isdisjoint(load(tmp_path / "a")["record_id"])

    summary = export_dataset("dpo", entries, tmp_path / "b", ExportFilter(include_held_out=True))
    ds = load(tmp_path / "b")
    marked = {r["record_id"] for r in ds if r["held_out"]}
    assert marked == ids(entries, 4) and summary.held_out_rows == 1 and summary.rows == 4
    assert "- held-out rows: 1" in (tmp_path / "b/README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("filters", "records"), [
    ({"batch": "b1"}, (0, 3)),
    ({"batch": "Asthma"}, (1,)),
    ({"batch": "b1", "include_held_out": True}, (0, 3, 4)),
    ({"since": T0 + timedelta(minutes=10), "until": T0 + timedelta(minutes=30)}, (1, 2, 3)),  # inclusive
    ({"since": datetime(2025, 3, 1, 9, 15)}, (2, 3)),  # naive: UTC
    ({"until": datetime(2025, 3, 1, 9, 10)}, (0, 1)),
    ({"resolved_only": True}, (0, 3)),
    ({"reviewer": "drkim"}, (1,)),
    ({"reviewer": "drlee", "batch": "b1"}, (0,)),
])
def test_filters_select_judgements(entries, tmp_path: Path, filters: dict, records: tuple) -> None:
    summary = export_dataset("raw", entries, tmp_path / "x", ExportFilter(**filters))
    assert set(load(tmp_path / "x")["record_id"]) == ids(entries, *records)
    assert summary.judgements == len(records)


def test_bad_filters_are_refused(entries, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'since' .* is after 'until'"):
        export_dataset("raw", entries, tmp_path / "x", ExportFilter(since=T0, until=T0 - timedelta(days=1)))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValidationError, match="speciality"):
        ExportFilter(speciality="cardiology")


def test_reviewers_are_pseudonyms_unless_named(entries, tmp_path: Path) -> None:
    summary = export_dataset("raw", entries, tmp_path / "p")
    assert load(tmp_path / "p")["reviewer"] == ["reviewer-1", "reviewer-2", "reviewer-1", "reviewer-3"]
    assert summary.reviewers == 3
    for f in ("README.md", "data/train.jsonl", "data/train.parquet"):
        data = (tmp_path / "p" / f).read_bytes()
        assert not any(name in data for name in (b"drlee", b"drkim", b"drpat")), f
    # numbered by first appearance in this export: drkim is the first SFT reviewer here
    export_dataset("sft", entries, tmp_path / "s", ExportFilter(reviewer="drkim"))
    assert load(tmp_path / "s")["reviewer"] == ["reviewer-1"]

    named = export_dataset("raw", entries, tmp_path / "n", card=CardInfo(name_reviewers=True))
    assert load(tmp_path / "n")["reviewer"] == ["drlee", "drkim", "drlee", "drpat"] and named.reviewers == 3
    assert "- reviewers: 3 (drkim, drlee, drpat)" in (tmp_path / "n/README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["sft", "dpo", "raw"])
def test_an_empty_export_still_writes_typed_files_and_a_card(entries, tmp_path: Path, kind: str) -> None:
    import pyarrow.parquet as pq
    from datasets import Features

    out = tmp_path / "x"
    summary = export_dataset(kind, entries, out, ExportFilter(reviewer="nobody"))
    assert (summary.rows, summary.judgements, summary.reviewers, summary.date_range) == (0, 0, 0, None)
    table = pq.read_table(out / "data/train.parquet")
    assert table.num_rows == 0
    features = Features.from_arrow_schema(table.schema)
    if kind != "raw":
        assert list(features) == COLUMNS[kind]
        message = features[COLUMNS[kind][1]].feature
        assert {k: v.dtype for k, v in message.items()} == {"role": "string", "content": "string"}
    else:
        assert features["candidates"].feature.dtype == "string" and features["resolved"].dtype == "bool"
    assert (out / "data/train.jsonl").read_text(encoding="utf-8") == ""
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "- rows: 0" in card and "date range: none" in card and "has no rows" in card


def test_a_folder_no_export_wrote_is_refused_and_left_alone(entries, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="no export wrote .*notes.txt"):
        export_dataset("sft", entries, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        export_dataset("sft", entries, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_dataset("sft", entries, empty).rows == 2  # an empty folder is fine


def test_an_unknown_kind_is_refused(entries, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown export kind 'orpo'"):
        export_dataset("orpo", entries, tmp_path / "x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_re_exporting_replaces_the_previous_export(entries, tmp_path: Path) -> None:
    out, cache = tmp_path / "x", tmp_path / "cache"
    export_dataset("sft", entries, out)
    assert load(out, cache).column_names == COLUMNS["sft"]
    (out / "data" / "stale.parquet").write_bytes(b"old")
    export_dataset("dpo", entries, out)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train.jsonl", "train.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "x"]
    # the card's sizes make load_dataset's cache (keyed by folder and card, not file times) load afresh
    assert load(out, cache).column_names == COLUMNS["dpo"]


def test_a_failed_export_leaves_the_previous_one_whole(entries, tmp_path: Path, monkeypatch) -> None:
    import datasets

    out = tmp_path / "x"
    export_dataset("sft", entries, out)
    before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "to_json", fail)
    with pytest.raises(OSError, match="disk full"):
        export_dataset("dpo", entries, out)
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_the_card_states_counts_licence_and_filters(entries, tmp_path: Path) -> None:
    card = CardInfo(
        licence="cc-by-nc-4.0", agreement={"kappa": 0.71, "pairs": 40}, base_model="tiny", versions=["v0002"]
    )
    export_dataset("dpo", entries, tmp_path / "x", ExportFilter(batch="b1", include_held_out=True), card)
    text = (tmp_path / "x/README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "cc-by-nc-4.0"
    train = {"split": "train", "path": "data/train.parquet"}
    assert header["configs"] == [{"config_name": "default", "data_files": [train]}]
    assert header["dataset_info"]["splits"][0]["num_examples"] == 3
    for line in [
        "Kind: **dpo**", "Licence: `cc-by-nc-4.0`", "| chosen | list of messages (role, content) |",
        "- rows: 3", "- judgements: 2 (of 3 selected", "- edit: 1", "- rank: 1", "- held-out rows: 1",
        "- reviewers: 2 (pseudonymised)", "| kappa | 0.71 |", "| pairs | 40 |", "- batch: b1",
        "- held-out judgements: included", "- base model: tiny", "- model versions: v0002",
        "date range: 2025-03-01T09:30:00+00:00 to 2025-03-01T09:40:00+00:00", "redacted before storage",
    ]:
        assert line in text, line


def test_zip_export_holds_the_folder(entries, tmp_path: Path) -> None:
    export_dataset("kto", entries, tmp_path / "x")
    archive = zip_export(tmp_path / "x")
    assert archive == tmp_path / "x.zip"
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"x/README.md", "x/data/train.parquet", "x/data/train.jsonl"} <= names
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="not an export folder"):
        zip_export(tmp_path / "other")


def test_trl_trains_a_dpo_step_on_the_exported_set(entries, tmp_path: Path, tiny_base: Path) -> None:
    export_dataset("dpo", entries, tmp_path / "x", ExportFilter(include_held_out=True))
    dataset = load(tmp_path / "x")  # metadata columns and all, as a hospital would load it
    loss, lora_changed = one_dpo_step(dataset, tiny_base, tmp_path / "run")
    assert math.isfinite(loss) and lora_changed
