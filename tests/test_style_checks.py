"""Style checks: phrases and regular expressions an admin defines, checked on every version's sample answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_app.core.errors import UserError
from hitl_app.versions.manifest import Manifest, RoundMetrics, SampleAnswer
from hitl_app.evaluation.style_checks import StyleChecks, adoption, make_check


def manifest(version: str, parent: str, answers: list[str], serving: list[str] | None = None) -> Manifest:
    serving = serving or ["base answer"] * len(answers)
    return Manifest(
        version=version,
        parent=parent,
        base_model="tiny",
        record_ids=[],
        store_cursor=0,
        config={},
        metrics=RoundMetrics(duration_s=1.0),
        samples=[
            SampleAnswer(question_id=f"q{i}", question="?", max_new_tokens=96, answer=a, finished=True,
                         serving_answer=s, serving_finished=True)
            for i, (a, s) in enumerate(zip(answers, serving))
        ],
    )


@pytest.mark.parametrize(
    ("pattern", "regex", "text", "hit"),
    [
        ("seek urgent care", False, "Rest. Seek URGENT care if worse.", True),  # phrases ignore case
        ("seek urgent care", False, "Rest at home.", False),
        ("a.b", False, "axb", False),  # a phrase is literal, not a pattern
        (r"^Key points:", True, "Intro\nKey points:\n- one", True),  # ^ matches at a line start
        (r"^Key points:", True, "See Key points:", False),
        (r"^- \S", True, "Key points:\n- rest", True),
    ],
)
def test_a_check_matches_phrases_and_patterns(pattern: str, regex: bool, text: str, hit: bool) -> None:
    assert make_check("style", pattern, regex).matches(text) is hit


@pytest.mark.parametrize(("name", "pattern", "regex", "message"), [
    ("", "x", False, "name"),
    ("  ", "x", False, "name"),
    ("s", "", False, "pattern"),
    ("s", "(unclosed", True, "does not compile"),
])
def test_invalid_checks_are_refused_with_the_reason(name: str, pattern: str, regex: bool, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_check(name, pattern, regex)


def test_checks_are_kept_replaced_and_removed(tmp_path: Path) -> None:
    store = StyleChecks(tmp_path)
    assert store.all() == []
    store.put(make_check("safety", "call 111"))
    store.put(make_check("heading", r"^Summary:", regex=True))
    store.put(make_check("safety", "call your GP"))  # same name: replaced, and moved last
    assert [(c.name, c.pattern) for c in StyleChecks(tmp_path).all()] == [("heading", "^Summary:"), ("safety", "call your GP")]
    assert [c.name for c in store.remove("heading")] == ["safety"]
    with pytest.raises(UserError, match="no style check named 'nope'; there are: safety"):
        store.remove("nope")


def test_adoption_reads_every_version_and_the_base_from_the_manifests() -> None:
    manifests = [
        manifest("v0001", "base", ["Summary: a", "b", "Summary: c", "d"], serving=["x", "y", "z", "Summary: w"]),
        manifest("v0002", "v0001", ["Summary: a", "Summary: b", "Summary: c", "d"]),
        Manifest(version="v0003", parent="v0002", base_model="tiny", record_ids=[], store_cursor=0, config={},
                 metrics=RoundMetrics(duration_s=1.0)),  # evaluated before versions kept samples
    ]
    rows = adoption(manifests, [make_check("summary", r"^Summary:", regex=True)])
    assert [(r["version"], r["adoption"]) for r in rows] == [("base", 0.25), ("v0001", 0.5), ("v0002", 0.75)]
    assert all(r["style"] == "summary" and r["answers"] == 4 for r in rows)


def test_concurrent_saves_keep_every_check(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from hitl_app.evaluation.style_checks import StyleChecks, make_check

    def save(i: int) -> None:
        StyleChecks(tmp_path).put(make_check(f"style-{i}", f"phrase {i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(save, range(16)))
    assert sorted(c.name for c in StyleChecks(tmp_path).all()) == sorted(f"style-{i}" for i in range(16))


def test_the_first_check_creates_its_folder(tmp_path) -> None:
    from hitl_app.evaluation.style_checks import StyleChecks, make_check

    checks = StyleChecks(tmp_path / "not-yet" / "checkpoints")
    assert [c.name for c in checks.put(make_check("heading", "Key points:"))] == ["heading"]
