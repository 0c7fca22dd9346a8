"""The generated PHI evaluation set, its scorer, and the redaction's figures on it."""

from __future__ import annotations

from collections import Counter

import pytest

from hitl_app.bench.phi_score import (
    GOALS,
    OTHER_LOCALES,
    PER_LOCALE,
    found,
    load_set,
    other_locales_recall,
    score,
    shipped_clinical_sentences,
    unchanged_share,
)
from hitl_app.bench.phi_set import LOCALES, generate
from hitl_app.safety.phi import redact


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_set()


def test_the_shipped_set_is_what_the_seeded_script_writes(rows: list[dict]) -> None:
    assert generate() == rows


def test_the_set_has_the_size_and_variety_asked_for(rows: list[dict]) -> None:
    with_ids = [r for r in rows if not r["clean"]]
    clean = [r for r in rows if r["clean"]]
    assert len(with_ids) >= 500 and len({r["template"] for r in with_ids}) >= 30
    assert len(clean) >= 200 and all(not r["identifiers"] for r in clean)
    assert len({r["locale"] for r in with_ids}) >= 8 and set(LOCALES) >= {r["locale"] for r in with_ids}
    names = [i["value"] for r in with_ids for i in r["identifiers"] if i["type"] == "NAME"]
    assert any("-" in n for n in names) and any("'" in n for n in names) and any(" " not in n for n in names)
    kinds = Counter(i["type"] for r in with_ids for i in r["identifiers"])
    assert set(kinds) >= {"NAME", "PHONE", "EMAIL", "ADDRESS", "SSN", "MRN", "NHS", "DOB", "MBI", "NPI", "CARD", "IP",
                          "URL", "DATE", "AGE"}  # fmt: skip
    assert all(i["value"] in r["text"] for r in with_ids for i in r["identifiers"])
    eponyms = " ".join(r["text"] for r in clean)
    assert all(e in eponyms for e in ("Parkinson's", "Graves'", "Guillain-Barré", "Addison's", "Wells", "Apgar", "Glasgow"))
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "kind, value, redacted, expected",
    [
        ("NAME", "Anna Smith", "[NAME] was seen", True),
        ("NAME", "Anna Smith", "[NAME] Smith was seen", False),  # half a name is a miss
        ("NAME", "Anna-Marie Jones", "Anna-Marie [NAME]", False),
        ("PHONE", "020 7946 0958", "call 020 [PHONE]", True),  # "020" alone identifies no one
        ("PHONE", "020 7946 0958", "call [PHONE] 0958", False),
        ("AGE", "94", "a [AGE]-year-old", True),
    ],
)
def test_an_identifier_counts_as_found_only_when_all_of_it_is_gone(kind: str, value: str, redacted: str, expected: bool) -> None:
    assert found(kind, value, redacted) is expected


def test_the_scorer_counts_misses_and_changes(rows: list[dict]) -> None:
    nothing = score(lambda text: text, rows)
    assert nothing["recall"] == 0.0 and nothing["clean_unchanged"] == 1.0
    everything = score(lambda text: "[REDACTED]", rows)
    assert everything["recall"] == 1.0 and everything["clean_unchanged"] == 0.0


def test_redaction_meets_the_goals_on_the_set(rows: list[dict]) -> None:
    figures = score(lambda text: redact(text).text, rows)
    assert figures["recall"] >= GOALS["recall"], figures["missed"][:5]
    assert figures["recall_by_type"]["NAME"] >= GOALS["name_recall"], figures["missed"][:5]
    others = {kind: recall for kind, recall in figures["recall_by_type"].items() if kind != "NAME"}
    assert all(recall >= GOALS["recall"] for recall in others.values()), others
    assert figures["clean_unchanged"] >= GOALS["clean_unchanged"], figures["changed"][:5]


def test_redaction_leaves_the_apps_own_clinical_text_unchanged() -> None:
    # Text written before the name detector, outside the set's templates: questions, reference
    # answers, patient answers, probe passages, benign red-team prompts.
    sentences = shipped_clinical_sentences()
    assert len(sentences) > 700
    figures = unchanged_share(lambda text: redact(text).text, sentences)
    assert figures["unchanged"] >= GOALS["clean_unchanged"], figures["changed"][:5]


def test_redaction_finds_names_from_locales_and_scripts_outside_the_set() -> None:
    figures = other_locales_recall(lambda text: redact(text).text)
    assert figures["names"] == len(OTHER_LOCALES) * PER_LOCALE and not set(OTHER_LOCALES) & set(LOCALES)
    assert figures["recall"] >= 0.95, figures["missed"][:10]


def _every_rule_searched(text: str) -> tuple[str, dict[str, int]]:
    """Redaction with every rule's search run, whatever its digit and character gates say."""
    from hitl_app.safety import phi

    counts: Counter[str] = Counter()
    for rule in phi._RULES:
        text, n, _ = phi._substitute(text, rule.pattern, rule.kind, rule.pick)
        counts[rule.kind] += n
    text, n = phi._redact_names(text)
    counts["NAME"] += n
    return text, {kind: n for kind, n in counts.items() if n}


def test_the_rules_gates_skip_only_searches_that_cannot_redact(rows: list[dict]) -> None:
    # The gates (digits a match needs, characters it needs) are declared by hand beside each
    # pattern; on every sentence of the set, every identifier type included, they change nothing.
    extra = ["call 07700 900123 or email a.b@c.org", "IP 10.0.0.1 and fe80::1ff:fe23:4567:890a", "Mr Jones, 92 yo"]
    for text in [r["text"] for r in rows] + extra:
        fast = redact(text)
        assert (fast.text, fast.counts) == _every_rule_searched(text), text
