"""examples: judgements to TRL prompt-completion rows, with a bounded, seeded replay sample.

Pure functions: judgements are built in memory, no store or model is involved.
"""

from __future__ import annotations

import pytest

from hitl_app.examples import build_rows, prompt_messages, sft_row, sft_target
from hitl_app.ledger import Judgement
from hitl_app.schema import Feedback, Generation, Sampling

SYSTEM = "You are a careful medical assistant."
SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=32)


def make_judgement(
    action: str,
    offset: int = 0,
    candidate: int = 0,
    prompt: str = "First-line treatment for hypertension?",
    system_prompt: str | None = SYSTEM,
    candidates: tuple[str, ...] = ("An ACE inhibitor.", "A thiazide diuretic."),
) -> Judgement:
    """A generation and one judgement of it, as the ledger would pair them."""
    gen = Generation(
        reviewer="dr-a",
        prompt=prompt,
        system_prompt=system_prompt,
        candidates=list(candidates),
        version="base",
        sampling=SAMPLING,
        prompt_tokens=10,
    )
    extra: dict = {}
    if action == "edit":
        extra["text"] = f"Edited answer to: {prompt}"
    if action == "reject":
        extra["reason"] = "Unsafe advice."
    fb = Feedback(reviewer="dr-b", generation_id=gen.id, action=action, candidate=candidate, **extra)
    return Judgement(offset, fb, gen)


def judgements(actions: str, start: int = 0, tag: str = "") -> list[Judgement]:
    """One judgement per letter: a=accept, e=edit, r=reject, at increasing offsets."""
    names = {"a": "accept", "e": "edit", "r": "reject"}
    return [
        make_judgement(names[ch], offset=start + 100 * i, prompt=f"{tag}question {i}")
        for i, ch in enumerate(actions)
    ]


def completion(row: dict) -> str:
    assert [m["role"] for m in row["completion"]] == ["assistant"]
    return row["completion"][0]["content"]


# ----- single rows -----


@pytest.mark.parametrize(
    "action, candidate, expected",
    [
        pytest.param("accept", 0, "An ACE inhibitor.", id="accept-first"),
        pytest.param("accept", 1, "A thiazide diuretic.", id="accept-second"),
        pytest.param("edit", 0, "Edited answer to: First-line treatment for hypertension?", id="edit"),
        pytest.param("edit", 1, "Edited answer to: First-line treatment for hypertension?", id="edit-second"),
        pytest.param("reject", 0, None, id="reject"),
        pytest.param("reject", 1, None, id="reject-second"),
    ],
)
def test_sft_row(action: str, candidate: int, expected: str | None) -> None:
    j = make_judgement(action, candidate=candidate)
    assert sft_target(j) == expected
    row = sft_row(j)
    if expected is None:
        assert row is None
        return
    assert row == {
        "prompt": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "First-line treatment for hypertension?"},
        ],
        "completion": [{"role": "assistant", "content": expected}],
    }


@pytest.mark.parametrize(
    "system_prompt, roles",
    [(SYSTEM, ["system", "user"]), (None, ["user"]), ("", ["user"])],
)
def test_prompt_messages_include_the_system_prompt_only_when_set(system_prompt: str | None, roles: list[str]) -> None:
    gen = make_judgement("accept", system_prompt=system_prompt).generation
    messages = prompt_messages(gen)
    assert [m["role"] for m in messages] == roles
    assert messages[-1]["content"] == gen.prompt


# ----- a round's rows -----


@pytest.mark.parametrize(
    "actions, counts",
    [
        pytest.param("", {"sft": 0}, id="nothing"),
        pytest.param("a", {"new_accept": 1, "sft": 1}, id="one-accept"),
        pytest.param("r", {"new_reject": 1, "sft": 0}, id="one-reject"),
        pytest.param("aer", {"new_accept": 1, "new_edit": 1, "new_reject": 1, "sft": 2}, id="one-each"),
        pytest.param("rrar", {"new_accept": 1, "new_reject": 3, "sft": 1}, id="mostly-rejects"),
        pytest.param("eeaea", {"new_accept": 2, "new_edit": 3, "sft": 5}, id="no-rejects"),
    ],
)
def test_build_rows_new_only(actions: str, counts: dict[str, int]) -> None:
    new = judgements(actions)
    rows = build_rows(new, older=[], replay_size=10, seed=0)
    assert rows.counts == counts
    kept = [j for j in new if j.feedback.action != "reject"]
    assert len(rows.sft) == len(kept)
    # Rows keep store order, each traced to the feedback record it came from.
    assert rows.record_ids == [j.feedback.id for j in kept]
    assert [completion(r) for r in rows.sft] == [sft_target(j) for j in kept]
    assert [r["prompt"][-1]["content"] for r in rows.sft] == [j.generation.prompt for j in kept]
    # Every new judgement is consumed, rejects included, so none is counted as new again.
    assert rows.new_record_ids == [j.feedback.id for j in new]


@pytest.mark.parametrize(
    "older_actions, replay_size, expected_replay",
    [
        pytest.param("aaaaaa", 3, 3, id="bounded"),
        pytest.param("aea", 10, 3, id="fewer-than-size"),
        pytest.param("aaaa", 0, 0, id="size-zero"),
        pytest.param("rrrr", 5, 0, id="only-rejects-replay-nothing"),
        pytest.param("rarere", 5, 3, id="rejects-are-never-replayed"),
        pytest.param("", 5, 0, id="no-history"),
    ],
)
def test_build_rows_replay_is_bounded_and_skips_rejects(
    older_actions: str, replay_size: int, expected_replay: int
) -> None:
    new = judgements("ar", start=10_000, tag="new ")
    older = judgements(older_actions, tag="old ")
    rows = build_rows(new, older, replay_size=replay_size, seed=1)

    replayed = rows.record_ids[1:]  # the single new accept comes first
    assert rows.record_ids[0] == new[0].feedback.id
    assert len(replayed) == expected_replay
    old_ids = {j.feedback.id: j for j in older}
    assert set(replayed) <= set(old_ids) and len(set(replayed)) == len(replayed)
    assert all(old_ids[i].feedback.action != "reject" for i in replayed)
    assert len(rows.sft) == 1 + expected_replay
    assert rows.counts["sft"] == 1 + expected_replay
    assert sum(v for k, v in rows.counts.items() if k.startswith("replay_")) == expected_replay
    assert "replay_reject" not in rows.counts
    # Replayed judgements were consumed by an earlier round: they are not "new".
    assert rows.new_record_ids == [j.feedback.id for j in new]


def test_replay_sample_is_deterministic_for_a_seed() -> None:
    older = judgements("ae" * 20, tag="old ")
    new = judgements("a", start=10_000)
    first = build_rows(new, older, replay_size=5, seed=42)
    again = build_rows(new, older, replay_size=5, seed=42)
    assert first.record_ids == again.record_ids
    assert first.sft == again.sft
    assert first.counts == again.counts
    # Different seeds pick different samples (5 of 40: equal by chance with probability ~1e-6).
    samples = {tuple(build_rows(new, older, replay_size=5, seed=s).record_ids) for s in range(5)}
    assert len(samples) > 1


def test_replay_rows_carry_the_older_answers() -> None:
    older = judgements("ea", tag="old ")
    rows = build_rows([], older, replay_size=5, seed=0)
    assert rows.new_record_ids == []
    assert sorted(rows.record_ids) == sorted(j.feedback.id for j in older)
    by_prompt = {r["prompt"][-1]["content"]: completion(r) for r in rows.sft}
    assert by_prompt == {j.generation.prompt: sft_target(j) for j in older}
    assert rows.counts == {"replay_edit": 1, "replay_accept": 1, "sft": 2}


def test_build_rows_does_not_mutate_its_inputs() -> None:
    new, older = judgements("aer", start=10_000), judgements("aaee")
    new_before, older_before = list(new), list(older)
    build_rows(new, older, replay_size=2, seed=3)
    assert new == new_before and older == older_before
