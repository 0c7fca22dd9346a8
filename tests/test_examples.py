"""examples: judgements to TRL conversational rows (SFT, DPO, KTO), with a bounded, seeded replay.

Pure functions: judgements are built in memory, no store or model is involved.
"""

from __future__ import annotations

import pytest

from hitl_app.feedback.training_rows import (
    build_rows,
    normalise,
    prompt_messages,
    rows_for,
    sft_row,
    sft_target,
)
from hitl_app.feedback.ledger import Judgement
from hitl_app.feedback.records import Feedback, Generation, Sampling

SYSTEM = "You are a careful medical assistant."
QUESTION = "First-line treatment for hypertension?"
SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=32)

ACE = "An ACE inhibitor."
THIAZIDE = "A thiazide diuretic."
CCB = "A calcium channel blocker."
ACE_RESPACED = "  an ace\n inhibitor.  "  # ACE after normalisation (case and whitespace)
EDITED = "A thiazide diuretic or an ACE inhibitor, by patient profile."
TWO = (ACE, THIAZIDE)
THREE = (ACE, THIAZIDE, CCB)


def make_judgement(
    action: str,
    offset: int = 0,
    candidate: int = 0,
    prompt: str = QUESTION,
    system_prompt: str | None = SYSTEM,
    candidates: tuple[str, ...] = TWO,
    text: str | None = None,
    ranking: list[list[int]] | None = None,
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
        extra["text"] = text if text is not None else f"Edited answer to: {prompt}"
    if action == "reject":
        extra["reason"] = "Unsafe advice."
    if action == "rank":
        extra["ranking"] = ranking
    fb = Feedback(reviewer="dr-b", generation_id=gen.id, action=action, candidate=candidate, **extra)
    return Judgement(offset, fb, gen)


# One letter per kind of judgement, each on a two-candidate generation (ACE, THIAZIDE):
# keyword arguments of make_judgement and the rows it must yield (sft, dpo, kto desirable,
# kto undesirable, dropped identical pairs).
KINDS: dict[str, tuple[dict, tuple[int, int, int, int, int]]] = {
    "a": ({"action": "accept"}, (1, 0, 1, 0, 0)),
    "e": ({"action": "edit"}, (1, 1, 0, 1, 0)),
    "s": ({"action": "edit", "text": ACE_RESPACED}, (1, 0, 0, 0, 1)),  # same as the original
    "r": ({"action": "reject"}, (0, 0, 0, 1, 0)),
    "k": ({"action": "rank", "ranking": [[1], [0]]}, (0, 1, 0, 0, 0)),
    "t": ({"action": "rank", "ranking": [[0, 1]]}, (0, 0, 0, 0, 0)),  # all tied
    "i": ({"action": "rank", "ranking": [[0], [1]], "candidates": (ACE, ACE_RESPACED)}, (0, 0, 0, 0, 1)),
    "n": ({"action": "rank", "ranking": []}, (0, 0, 0, 2, 0)),  # all unacceptable
}
YIELDS_ROWS = {letter for letter, (_, made) in KINDS.items() if any(made[:4])}


def judgements(letters: str, start: int = 0, tag: str = "") -> list[Judgement]:
    """One judgement per letter of KINDS, at increasing offsets, each on its own question."""
    return [
        make_judgement(offset=start + 100 * i, prompt=f"{tag}question {i}", **KINDS[ch][0])
        for i, ch in enumerate(letters)
    ]


def reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def content(messages: list[dict[str, str]]) -> str:
    assert [m["role"] for m in messages] == ["assistant"]
    return messages[0]["content"]


def completion(row: dict) -> str:
    return content(row["completion"])


def user_prompt(row: dict) -> str:
    return row["prompt"][-1]["content"]


# ----- single rows -----


@pytest.mark.parametrize(
    "action, candidate, ranking, expected",
    [
        pytest.param("accept", 0, None, ACE, id="accept-first"),
        pytest.param("accept", 1, None, THIAZIDE, id="accept-second"),
        pytest.param("edit", 0, None, f"Edited answer to: {QUESTION}", id="edit"),
        pytest.param("edit", 1, None, f"Edited answer to: {QUESTION}", id="edit-second"),
        pytest.param("reject", 0, None, None, id="reject"),
        pytest.param("reject", 1, None, None, id="reject-second"),
        pytest.param("rank", 0, [[1], [0]], None, id="rank"),
        pytest.param("rank", 0, [], None, id="all-unacceptable"),
    ],
)
def test_sft_row(action: str, candidate: int, ranking: list[list[int]] | None, expected: str | None) -> None:
    j = make_judgement(action, candidate=candidate, ranking=ranking)
    assert sft_target(j) == expected
    row = sft_row(j)
    if expected is None:
        assert row is None
        return
    assert row == {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "completion": reply(expected),
    }
    # The SFT row rows_for yields is the same row.
    assert rows_for(j).sft == [row]


@pytest.mark.parametrize(
    "system_prompt, roles",
    [(SYSTEM, ["system", "user"]), (None, ["user"]), ("", ["user"])],
)
def test_prompt_messages_include_the_system_prompt_only_when_set(system_prompt: str | None, roles: list[str]) -> None:
    gen = make_judgement("accept", system_prompt=system_prompt).generation
    messages = prompt_messages(gen)
    assert [m["role"] for m in messages] == roles
    assert messages[-1]["content"] == gen.prompt


@pytest.mark.parametrize(
    "text, expected",
    [
        ("An ACE inhibitor.", "an ace inhibitor."),
        (ACE_RESPACED, "an ace inhibitor."),
        ("A\tthiazide \r\n diuretic", "a thiazide diuretic"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold, not lower
        ("An ACE inhibitor", "an ace inhibitor"),  # punctuation is kept
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


# ----- every judgement kind to its exact rows -----

# Expected rows: SFT completions, DPO (chosen, rejected) texts, KTO (completion, label), dropped pairs.
ROW_TABLE = [
    pytest.param(
        {"action": "accept", "candidate": 1, "candidates": THREE},
        [THIAZIDE], [], [(THIAZIDE, True)], 0,
        id="accept",
    ),
    pytest.param(
        {"action": "edit", "candidate": 0, "text": EDITED, "candidates": THREE},
        [EDITED], [(EDITED, ACE)], [(ACE, False)], 0,
        id="edit",
    ),
    pytest.param(
        {"action": "edit", "candidate": 2, "text": EDITED, "candidates": THREE},
        [EDITED], [(EDITED, CCB)], [(CCB, False)], 0,
        id="edit-third",
    ),
    pytest.param(
        {"action": "edit", "candidate": 0, "text": ACE_RESPACED, "candidates": THREE},
        [ACE_RESPACED], [], [], 1,
        id="edit-same-after-normalisation",
    ),
    pytest.param(
        {"action": "edit", "candidate": 0, "text": "An ACE inhibitor", "candidates": THREE},
        ["An ACE inhibitor"], [("An ACE inhibitor", ACE)], [(ACE, False)], 0,
        id="edit-punctuation-is-a-change",
    ),
    pytest.param(
        {"action": "reject", "candidate": 1, "candidates": THREE},
        [], [], [(THIAZIDE, False)], 0,
        id="reject",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[1], [0]], "candidates": TWO},
        [], [(THIAZIDE, ACE)], [], 0,
        id="rank-two",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[2], [0], [1]], "candidates": THREE},
        [], [(CCB, ACE), (CCB, THIAZIDE), (ACE, THIAZIDE)], [], 0,
        id="rank-strict",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[2], [0, 1]], "candidates": THREE},
        [], [(CCB, ACE), (CCB, THIAZIDE)], [], 0,
        id="rank-tie-last",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[0, 2], [1]], "candidates": THREE},
        [], [(ACE, THIAZIDE), (CCB, THIAZIDE)], [], 0,
        id="rank-tie-first",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[0, 1]], "candidates": TWO},
        [], [], [], 0,
        id="rank-all-tied-two",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[0, 1, 2]], "candidates": THREE},
        [], [], [], 0,
        id="rank-all-tied-three",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[0], [1], [2]], "candidates": (ACE, ACE_RESPACED, CCB)},
        [], [(ACE, CCB), (ACE_RESPACED, CCB)], [], 1,
        id="rank-identical-texts-dropped",
    ),
    pytest.param(
        {"action": "rank", "ranking": [[0, 1], [2]], "candidates": (ACE, ACE_RESPACED, CCB)},
        [], [(ACE, CCB), (ACE_RESPACED, CCB)], [], 0,
        id="rank-identical-texts-tied-nothing-to-drop",
    ),
    pytest.param(
        {"action": "rank", "ranking": [], "candidates": THREE},
        [], [], [(ACE, False), (THIAZIDE, False), (CCB, False)], 0,
        id="all-unacceptable",
    ),
    pytest.param(
        {"action": "rank", "ranking": [], "candidates": TWO},
        [], [], [(ACE, False), (THIAZIDE, False)], 0,
        id="all-unacceptable-two",
    ),
]


@pytest.mark.parametrize("kwargs, sft, dpo, kto, dropped", ROW_TABLE)
def test_rows_for_every_judgement_kind(
    kwargs: dict, sft: list[str], dpo: list[tuple[str, str]], kto: list[tuple[str, bool]], dropped: int
) -> None:
    made = rows_for(make_judgement(**kwargs))
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]

    assert made.sft == [{"prompt": prompt, "completion": reply(text)} for text in sft]

    for row in made.dpo:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"] == prompt
    assert sorted((content(r["chosen"]), content(r["rejected"])) for r in made.dpo) == sorted(dpo)
    assert len(made.dpo) == len(dpo)

    for row in made.kto:
        assert set(row) == {"prompt", "completion", "label"}
        assert row["prompt"] == prompt
        assert isinstance(row["label"], bool)
    assert sorted((completion(r), r["label"]) for r in made.kto) == sorted(kto)

    assert made.dropped_pairs == dropped
    assert made.empty == (not (sft or dpo or kto))


def test_rows_are_in_the_exact_conversational_format() -> None:
    """Whole rows, spelled out: what TRL's DPO and KTO trainers receive."""
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    edit = rows_for(make_judgement("edit", candidate=1, text=EDITED))
    assert edit.dpo == [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": EDITED}],
            "rejected": [{"role": "assistant", "content": THIAZIDE}],
        }
    ]
    assert edit.kto == [{"prompt": prompt, "completion": [{"role": "assistant", "content": THIAZIDE}], "label": False}]
    accept = rows_for(make_judgement("accept"))
    assert accept.kto == [{"prompt": prompt, "completion": [{"role": "assistant", "content": ACE}], "label": True}]


@pytest.mark.parametrize("kwargs, sft, dpo, kto, dropped", ROW_TABLE)
def test_rows_without_a_system_prompt_have_only_the_user_message(
    kwargs: dict, sft: list[str], dpo: list, kto: list, dropped: int
) -> None:
    made = rows_for(make_judgement(system_prompt=None, **kwargs))
    rows = made.sft + made.dpo + made.kto
    assert len(rows) == len(sft) + len(dpo) + len(kto)
    assert all(r["prompt"] == [{"role": "user", "content": QUESTION}] for r in rows)


# ----- a round's rows -----

ZERO = {"sft": 0, "dpo": 0, "kto_desirable": 0, "kto_undesirable": 0, "dropped_identical_pairs": 0, "held_out": 0, "sft_replay": 0}


@pytest.mark.parametrize(
    "letters, counts",
    [
        pytest.param("", {}, id="nothing"),
        pytest.param("a", {"new_accept": 1, "sft": 1, "kto_desirable": 1}, id="one-accept"),
        pytest.param("r", {"new_reject": 1, "kto_undesirable": 1}, id="one-reject"),
        pytest.param("e", {"new_edit": 1, "sft": 1, "dpo": 1, "kto_undesirable": 1}, id="one-edit"),
        pytest.param("s", {"new_edit": 1, "sft": 1, "dropped_identical_pairs": 1}, id="edit-same"),
        pytest.param("k", {"new_rank": 1, "dpo": 1}, id="one-rank"),
        pytest.param("t", {"new_rank": 1}, id="all-tied"),
        pytest.param("i", {"new_rank": 1, "dropped_identical_pairs": 1}, id="rank-identical"),
        pytest.param("n", {"new_rank": 1, "kto_undesirable": 2}, id="all-unacceptable"),
        pytest.param(
            "aer",
            {"new_accept": 1, "new_edit": 1, "new_reject": 1, "sft": 2, "dpo": 1, "kto_desirable": 1, "kto_undesirable": 2},
            id="accept-edit-reject",
        ),
        pytest.param(
            "rrar", {"new_accept": 1, "new_reject": 3, "sft": 1, "kto_desirable": 1, "kto_undesirable": 3}, id="mostly-rejects"
        ),
        pytest.param(
            "eeaea", {"new_accept": 2, "new_edit": 3, "sft": 5, "dpo": 3, "kto_desirable": 2, "kto_undesirable": 3}, id="no-rejects"
        ),
        pytest.param(
            "aesrktin",
            {
                "new_accept": 1, "new_edit": 2, "new_reject": 1, "new_rank": 4,
                "sft": 3, "dpo": 2, "kto_desirable": 1, "kto_undesirable": 4, "dropped_identical_pairs": 2,
            },
            id="every-kind",
        ),
    ],
)
def test_build_rows_new_only(letters: str, counts: dict[str, int]) -> None:
    new = judgements(letters)
    rows = build_rows(new, older=[], replay_size=10, seed=0)
    assert rows.counts == {**ZERO, **counts}

    # Every judgement that yields a row is traced, in store order; those yielding none are not.
    kept = [j for j, ch in zip(new, letters) if ch in YIELDS_ROWS]
    assert rows.record_ids == [j.feedback.id for j in kept]
    # Every new judgement is consumed, empty ones included, so none is counted as new again.
    assert rows.new_record_ids == [j.feedback.id for j in new]

    # Rows keep store order, each on its own judgement's prompt.
    def prompts(kind: int) -> list[str]:
        return [j.generation.prompt for j, ch in zip(new, letters) for _ in range(KINDS[ch][1][kind])]

    assert [user_prompt(r) for r in rows.sft] == prompts(0)
    assert [user_prompt(r) for r in rows.dpo] == prompts(1)
    assert [user_prompt(r) for r in rows.kto if r["label"]] == prompts(2)
    assert [user_prompt(r) for r in rows.kto if not r["label"]] == prompts(3)
    assert [completion(r) for r in rows.sft] == [sft_target(j) for j in new if sft_target(j) is not None]


@pytest.mark.parametrize(
    "older_letters, replay_size, expected_replay",
    [
        pytest.param("aaaaaa", 3, 3, id="bounded"),
        pytest.param("aea", 10, 3, id="fewer-than-size"),
        pytest.param("aaaa", 0, 0, id="size-zero"),
        pytest.param("rrrr", 5, 4, id="rejects-are-replayed"),
        pytest.param("rarere", 3, 3, id="mixed-bounded"),
        pytest.param("knsn", 10, 4, id="ranks-and-same-edits-are-replayed"),
        pytest.param("tttt", 5, 0, id="all-tied-replay-nothing"),
        pytest.param("tiati", 5, 1, id="only-rows-are-replayed"),
        pytest.param("titkti", 1, 1, id="bounded-among-eligible"),
        pytest.param("", 5, 0, id="no-history"),
    ],
)
def test_build_rows_replay_is_bounded_to_judgements_with_rows(
    older_letters: str, replay_size: int, expected_replay: int
) -> None:
    new = judgements("at", start=10_000, tag="new ")  # an accept, then a ranking with no rows
    older = judgements(older_letters, tag="old ")
    rows = build_rows(new, older, replay_size=replay_size, seed=1)

    assert rows.record_ids[0] == new[0].feedback.id
    assert new[1].feedback.id not in rows.record_ids
    replayed_ids = rows.record_ids[1:]
    assert len(replayed_ids) == expected_replay
    letter_by_id = {j.feedback.id: ch for j, ch in zip(older, older_letters)}
    assert set(replayed_ids) <= set(letter_by_id) and len(set(replayed_ids)) == len(replayed_ids)
    replayed = [letter_by_id[i] for i in replayed_ids]
    assert all(ch in YIELDS_ROWS for ch in replayed)

    # Row totals: the new accept plus exactly the rows of the replayed judgements.
    totals = [1 + sum(KINDS[ch][1][k] for ch in replayed) for k in range(2)]
    assert (len(rows.sft), rows.counts["sft"]) == (totals[0], totals[0])
    assert len(rows.sft_new) == 1 and len(rows.sft_replay) == rows.counts["sft_replay"] == totals[0] - 1
    assert len(rows.dpo) == rows.counts["dpo"] == sum(KINDS[ch][1][1] for ch in replayed)
    assert rows.counts["kto_desirable"] == 1 + sum(KINDS[ch][1][2] for ch in replayed)
    assert rows.counts["kto_undesirable"] == sum(KINDS[ch][1][3] for ch in replayed)
    assert rows.counts["dropped_identical_pairs"] == sum(KINDS[ch][1][4] for ch in replayed)
    assert {k: v for k, v in rows.counts.items() if k.startswith("new_")} == {"new_accept": 1, "new_rank": 1}
    replay_counts = {k: v for k, v in rows.counts.items() if k.startswith("replay_")}
    assert sum(replay_counts.values()) == expected_replay
    assert replay_counts == {
        f"replay_{a}": sum(1 for ch in replayed if KINDS[ch][0]["action"] == a)
        for a in {KINDS[ch][0]["action"] for ch in replayed}
    }
    # Replayed judgements were consumed by an earlier round: they are not "new".
    assert rows.new_record_ids == [j.feedback.id for j in new]


def test_replay_sample_is_deterministic_for_a_seed() -> None:
    older = judgements("aerknt" * 8, tag="old ")
    new = judgements("a", start=10_000)
    first = build_rows(new, older, replay_size=5, seed=42)
    again = build_rows(new, older, replay_size=5, seed=42)
    assert len(first.record_ids) == 1 + 5
    assert first.record_ids == again.record_ids
    assert (first.sft, first.dpo, first.kto) == (again.sft, again.dpo, again.kto)
    assert first.counts == again.counts
    # Different seeds pick different samples (5 of 40 eligible: equal by chance with probability ~1e-6).
    samples = {tuple(build_rows(new, older, replay_size=5, seed=s).record_ids) for s in range(5)}
    assert len(samples) > 1


def test_replay_rows_carry_the_older_answers() -> None:
    older = judgements("earnst", tag="old ")
    rows = build_rows([], older, replay_size=10, seed=0)
    assert rows.new_record_ids == []
    assert sorted(rows.record_ids) == sorted(j.feedback.id for j in older[:5])  # the all-tied rank has no rows
    assert rows.counts == {
        "replay_edit": 2, "replay_accept": 1, "replay_reject": 1, "replay_rank": 1,
        "sft": 3, "sft_replay": 3, "dpo": 1, "kto_desirable": 1, "kto_undesirable": 4, "dropped_identical_pairs": 1,
        "held_out": 0,
    }
    assert rows.sft_new == [] and rows.sft == rows.sft_replay  # replayed rows are kept apart: trained once
    by_prompt = {user_prompt(r): completion(r) for r in rows.sft}
    assert by_prompt == {j.generation.prompt: sft_target(j) for j in older if sft_target(j) is not None}
    assert {user_prompt(r): (content(r["chosen"]), content(r["rejected"])) for r in rows.dpo} == {
        "old question 0": ("Edited answer to: old question 0", ACE)
    }
    assert sorted((user_prompt(r), completion(r), r["label"]) for r in rows.kto) == [
        ("old question 0", ACE, False),
        ("old question 1", ACE, True),
        ("old question 2", ACE, False),
        ("old question 3", THIAZIDE, False),  # "A thiazide" sorts before "An ACE"
        ("old question 3", ACE, False),
    ]


def test_build_rows_does_not_mutate_its_inputs() -> None:
    new, older = judgements("aerkn", start=10_000), judgements("aaeekn")
    new_before, older_before = list(new), list(older)
    build_rows(new, older, replay_size=2, seed=3)
    assert new == new_before and older == older_before


# ----- the held-out slice -----
def test_held_out_judgements_are_consumed_but_never_trained_on() -> None:
    from hitl_app.feedback.holdout import is_held_out

    new = judgements("aekrn" * 40, start=10_000, tag="new ")
    older = judgements("aekrn" * 40, tag="old ")
    rows = build_rows(new, older, replay_size=len(older), seed=0, holdout_fraction=0.3)
    held_new = [j for j in new if is_held_out(j, 0.3)]
    held_old = [j for j in older if is_held_out(j, 0.3)]
    # Only pair-yielding actions are held out, and roughly the asked share of them (36 of 120
    # expected each; the ids are random, and these bounds are four standard deviations wide).
    assert {j.feedback.action for j in held_new + held_old} <= {"edit", "rank"}
    assert 15 <= len(held_new) <= 57 and 15 <= len(held_old) <= 57
    assert rows.counts["held_out"] == len(held_new)
    trained = set(rows.record_ids)
    assert not trained & {j.feedback.id for j in held_new + held_old}
    assert rows.new_record_ids == [j.feedback.id for j in new]  # consumed all the same
    # The choice depends on the record id alone: the same every round.
    assert [is_held_out(j, 0.3) for j in new] == [is_held_out(j, 0.3) for j in new]
    assert build_rows(new, older, replay_size=0, seed=0, holdout_fraction=0.0).counts["held_out"] == 0


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5])
def test_holdout_draw_is_uniform_enough(fraction: float) -> None:
    from hitl_app.feedback.holdout import holdout_draw

    draws = [holdout_draw(f"record-{i}") for i in range(4000)]
    assert all(0 <= d < 1 for d in draws)
    share = sum(d < fraction for d in draws) / len(draws)
    assert abs(share - fraction) < 0.03
