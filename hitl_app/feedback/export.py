"""Export a team's curated judgements as a dataset the hospital's own models can train on.

``export_dataset`` writes a folder that ``datasets.load_dataset(folder)`` reads as split "train":
``README.md`` (a dataset card whose YAML header names the licence and the data file),
``data/train.parquet`` (typed by explicit ``datasets.Features``) and ``data/train.jsonl`` (the
same rows). Rows are TRL's conversational formats, built by ``training_rows``: ``sft`` is
``messages``, ``dpo`` and ``reward`` are ``prompt``/``chosen``/``rejected``, ``kto`` is
``prompt``/``completion``/``label``; ``raw`` is one flat row per judgement. Every row also has
``record_id``, ``reviewer`` (a pseudonym unless names are asked for), ``batch`` and ``held_out``.
The store holds only redacted text, so nothing here redacts again.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import UserError
from .ledger import Judgement
from .training_rows import rows_for

ExportKind = Literal["sft", "dpo", "kto", "reward", "raw"]
KINDS: tuple[str, ...] = get_args(ExportKind)
CARD, PARQUET, JSONL = "README.md", "data/train.parquet", "data/train.jsonl"
# What a previous export leaves in its folder: only such a folder may be replaced.
_EXPORT_ENTRIES = {"README.md", "data"}
_NOTES = {
    "prompt": "system (if any) and user messages",
    "messages": "system (if any), user question, then the endorsed assistant answer",
    "chosen": "the preferred assistant answer", "rejected": "the less preferred assistant answer",
    "completion": "an assistant answer", "label": "true if the clinician endorsed the answer",
    "record_id": "id of the feedback record the row comes from", "created_at": "ISO time of the judgement",
    "reviewer": "who judged it (a pseudonym numbered within this export unless names were asked for)",
    "batch": "name of the imported question set (empty: typed in Review)", "ranking": "JSON tie groups, best first",
    "held_out": "a judgement the app keeps out of training to evaluate versions on",
    "rubric": "JSON ratings", "candidates": "the model's answers", "redactions": "JSON identifier type -> count",
}


class ExportFilter(BaseModel):
    """Which judgements an export takes. Times bound the feedback's ``created_at``, inclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: str | None = Field(default=None, description="A batch id or name.")
    since: datetime | None = None
    until: datetime | None = None
    resolved_only: bool = False
    reviewer: str | None = None
    include_held_out: bool = False

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Records are stored in UTC; a bare date typed at a prompt means UTC too.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


@dataclass(frozen=True)
class ExportEntry:
    """A judgement with its queue context; ``resolved`` is None when it is not a queued item."""

    judgement: Judgement
    batch_id: str | None
    batch_name: str | None
    item_id: str | None
    resolved: bool | None
    held_out: bool


class CardInfo(BaseModel):
    """What the dataset card says beyond the counts."""

    title: str = Field(default="Clinician-reviewed medical answers", min_length=1)
    licence: str = Field(default="other", min_length=1)
    agreement: dict[str, Any] | None = Field(default=None, description="Agreement figures to print.")
    name_reviewers: bool = False
    base_model: str | None = None
    versions: list[str] = Field(default_factory=list)


class ExportSummary(BaseModel):
    """What an export wrote: counts, the files (relative to ``out``) and the judgements' time span."""

    kind: ExportKind
    rows: int
    judgements: int
    held_out_rows: int
    files: list[str]
    out: str
    reviewers: int
    date_range: tuple[str, str] | None


def _features(kind: str):
    from datasets import Features, List, Value

    text, flag = Value("string"), Value("bool")
    msgs = List({"role": text, "content": text})  # typed even when no row has a value
    pair = {"prompt": msgs, "chosen": msgs, "rejected": msgs}
    raw_text = "created_at action text reason ranking override_reason rubric settles generation_id prompt system_prompt"
    raw = {**{c: text for c in raw_text.split()}, "candidate": Value("int32"), "candidates": List(text),
           **{c: text for c in ("version", "item_id", "batch_id", "batch_name")}, "resolved": flag, "redactions": text}
    own = {"sft": {"messages": msgs}, "dpo": pair, "reward": pair, "raw": raw,
           "kto": {"prompt": msgs, "completion": msgs, "label": flag}}[kind]
    return Features({"record_id": text, **own, "reviewer": text, "batch": text, "held_out": flag})


def _keep(e: ExportEntry, f: ExportFilter) -> bool:
    fb = e.judgement.feedback
    return (
        (f.include_held_out or not e.held_out)
        and (f.batch is None or f.batch in (e.batch_id, e.batch_name))
        and (f.since is None or fb.created_at >= f.since)
        and (f.until is None or fb.created_at <= f.until)
        and (not f.resolved_only or e.resolved is True)
        and (f.reviewer is None or fb.reviewer == f.reviewer)
    )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _raw_row(e: ExportEntry) -> dict[str, Any]:
    fb, gen = e.judgement.feedback, e.judgement.generation
    redactions = Counter(gen.redactions) + Counter(fb.redactions)
    return {
        "created_at": fb.created_at.isoformat(), "action": fb.action, "candidate": fb.candidate, "text": fb.text,
        "reason": fb.reason, "ranking": _json(fb.ranking), "override_reason": fb.override_reason,
        "rubric": _json(fb.rubric), "settles": fb.settles, "generation_id": gen.id, "prompt": gen.prompt,
        "system_prompt": gen.system_prompt, "candidates": list(gen.candidates), "version": gen.version,
        "item_id": e.item_id or gen.item_id, "batch_id": e.batch_id, "batch_name": e.batch_name,
        "resolved": e.resolved, "redactions": _json(dict(redactions)),
    }


def _rows(kind: str, e: ExportEntry) -> list[dict[str, Any]]:
    if kind == "raw":
        return [_raw_row(e)]
    made = rows_for(e.judgement)
    if kind == "sft":
        # TRL's conversational language-modelling format: the whole exchange in one list.
        return [{"messages": r["prompt"] + r["completion"]} for r in made.sft]
    return made.kto if kind == "kto" else made.dpo


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"cannot export to {out}: it is a file, not a folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _EXPORT_ENTRIES) if out.is_dir() else []
    if foreign:
        raise UserError(f"cannot export to {out}: the folder holds files that no export wrote "
                        f"({', '.join(foreign[:5])}); choose an empty or new folder")


def export_dataset(
    kind: ExportKind,
    entries: list[ExportEntry],
    out: Path,
    filters: ExportFilter | None = None,
    card: CardInfo | None = None,
) -> ExportSummary:
    """Write the selected judgements' rows of ``kind`` to ``out`` (Parquet, JSONL and a dataset card).

    The folder is written beside ``out`` first and renamed into place, so a failed export leaves
    nothing behind and a previous export in ``out`` is replaced whole.

    Args:
        kind: the row format (see the module docstring).
        entries: every candidate judgement, in store order (pseudonyms follow that order).
        out: the folder to write; new, empty, or a previous export.
        filters: which entries to take; by default all but the held-out ones.
        card: what the dataset card says besides the counts.

    Returns:
        The counts and the files written (relative to ``out``).

    Raises:
        UserError: an unknown kind, 'since' after 'until', or ``out`` is a file or a folder holding
            files no export wrote.
    """
    from datasets import Dataset

    if kind not in KINDS:
        raise UserError(f"unknown export kind {kind!r}; expected one of {', '.join(KINDS)}")
    # Resolved so that "." or "x/.." still name a folder with a parent to write the sibling in.
    filters, card, out = filters or ExportFilter(), card or CardInfo(), Path(out).resolve()
    if filters.since and filters.until and filters.since > filters.until:
        # Checked here, not in the model, so the command line gets a UserError, not a ValidationError.
        raise UserError(f"'since' ({filters.since:%Y-%m-%d %H:%M}) is after 'until' ({filters.until:%Y-%m-%d %H:%M})")
    _check_out(out)
    features = _features(kind)
    # Column lists, not a list of row dicts: a 100k-judgement export stays a few seconds.
    columns: dict[str, list] = {name: [] for name in features}
    pseudonyms: dict[str, str] = {}
    selected = [e for e in entries if _keep(e, filters)]
    used: list[ExportEntry] = []
    held_rows = 0
    for e in selected:
        made = _rows(kind, e)
        if not made:
            continue
        fb = e.judgement.feedback
        if fb.reviewer not in pseudonyms:  # numbered by first appearance, so stable for one selection
            pseudonyms[fb.reviewer] = fb.reviewer if card.name_reviewers else f"reviewer-{len(pseudonyms) + 1}"
        who = pseudonyms[fb.reviewer]
        used.append(e)
        held_rows += len(made) if e.held_out else 0
        meta = {"record_id": fb.id, "reviewer": who, "batch": e.batch_name, "held_out": e.held_out}
        for row in made:
            for name, value in {**row, **meta}.items():
                columns[name].append(value)
    dataset = Dataset.from_dict(columns, features=features)
    times = [e.judgement.feedback.created_at for e in used]
    span = (min(times).isoformat(), max(times).isoformat()) if times else None
    summary = ExportSummary(kind=kind, rows=len(dataset), judgements=len(used), held_out_rows=held_rows,
                            files=[CARD, PARQUET, JSONL], out=str(out), reviewers=len(pseudonyms), date_range=span)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-{uuid.uuid4().hex[:8]}")
    try:
        (tmp / "data").mkdir(parents=True)
        dataset.to_parquet(str(tmp / PARQUET))
        dataset.to_json(str(tmp / JSONL), lines=True, force_ascii=False)
        facts = {"selected": len(selected), "actions": Counter(e.judgement.feedback.action for e in used),
                 "names": sorted(pseudonyms) if card.name_reviewers else [],
                 "download_size": (tmp / PARQUET).stat().st_size, "dataset_size": dataset.data.nbytes}
        (tmp / CARD).write_text(_card(summary, features, filters, card, facts), encoding="utf-8")
        _place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing a previous export there (restored if the rename fails)."""
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    had_old = out.exists()
    if had_old:
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if had_old:
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def _type(feature) -> str:
    inner = getattr(feature, "feature", None)  # a datasets List
    if inner is None:
        return feature.dtype
    return "list of messages (role, content)" if isinstance(inner, dict) else f"list of {inner.dtype}"


def _card(s: ExportSummary, features, filters: ExportFilter, card: CardInfo, facts: dict[str, Any]) -> str:
    import yaml

    sizes = {k: facts[k] for k in ("download_size", "dataset_size")}
    header = {
        "license": card.licence, "pretty_name": card.title,
        "tags": ["medical", "clinician-feedback", "human-feedback", s.kind],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}],
        # load_dataset caches a local folder by its path and this block, not by the files' times:
        # the sizes and row count make a re-export into the same folder load afresh.
        "dataset_info": {
            "config_name": "default", "features": features._to_yaml_list(), **sizes,
            "splits": [{"name": "train", "num_bytes": sizes["dataset_size"], "num_examples": s.rows}],
        },
    }
    notes = {**_NOTES, "prompt": "the question"} if s.kind == "raw" else _NOTES
    names = facts["names"]
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {' '.join(card.title.split())}", "",
        "Questions put to a medical language model and the model's answers, as judged by clinicians "
        "(accepted, edited, rejected, ranked or voted on) in the human-in-the-loop review app.", "",
        f"Kind: **{s.kind}**. Files: `{PARQUET}` and `{JSONL}` (the same rows). Licence: `{card.licence}`.", "",
        "| column | type | meaning |", "|---|---|---|",
        *(f"| {name} | {_type(feature)} | {_cell(notes.get(name, ''))} |" for name, feature in features.items()),
        "", "## Counts", "",
        f"- rows: {s.rows}",
        f"- judgements: {s.judgements} (of {facts['selected']} selected; the others yield no {s.kind} rows)",
        *(f"- {action}: {n}" for action, n in sorted(facts["actions"].items())),
        f"- held-out rows: {s.held_out_rows}",
        f"- reviewers: {s.reviewers}" + (f" ({', '.join(names)})" if names else " (pseudonymised)"),
        f"- date range: {' to '.join(s.date_range) if s.date_range else 'none'}",
    ]
    if card.base_model or card.versions:
        lines += [f"- base model: {card.base_model or 'unknown'}",
                  f"- model versions: {', '.join(card.versions) or 'unknown'}"]
    if not s.rows:
        # datasets refuses to load an empty split ("corresponds to no data").
        lines += ["", "This export has no rows: read the Parquet file with pyarrow or pandas, not load_dataset."]
    if card.agreement:
        lines += ["", "## Agreement", "", "| figure | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in card.agreement.items()]
    used = filters.model_dump(mode="json", exclude_defaults=True, exclude={"include_held_out"})
    lines += ["", "## Filters", "", *([f"- {k}: {_cell(v)}" for k, v in used.items()] or ["- none"])]
    lines += [f"- held-out judgements: {'included (held_out true)' if filters.include_held_out else 'excluded'}"]
    who = "their login names." if card.name_reviewers else "pseudonyms (reviewer-1, ...) numbered within this export."
    lines += ["", "## Privacy", "", "Identifiers were redacted before storage: the feedback store only ever holds "
              f"redacted text, so every text here is redacted. Reviewers appear as {who}", ""]
    return "\n".join(lines)


def zip_export(out: Path) -> Path:
    """Zip an export folder for a browser download; the zip (holding the folder) lies next to it.

    Args:
        out: a folder ``export_dataset`` wrote.

    Returns:
        The zip's path: ``out`` with ``.zip`` appended, replaced if it existed.

    Raises:
        UserError: ``out`` is not an export folder.
    """
    out = Path(out)
    if not (out / CARD).is_file() or not (out / PARQUET).is_file():
        raise UserError(f"{out} is not an export folder (no {CARD} and {PARQUET})")
    return Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))
