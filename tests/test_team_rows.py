"""What training uses of a team's judgements (``feedback.team``): consensus, adjudication, edits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hitl_app.feedback.ledger import Judgement
from hitl_app.feedback.records import Feedback, Generation, Sampling
from hitl_app.feedback.team import CONSENSUS_REVIEWER, item_state, group_by_item, resolved_count, training_judgements

SAMPLING = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=32)
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class Log:
    """Judgements at increasing offsets, as the ledger would hold them."""

    def __init__(self) -> None:
        self.judgements: list[Judgement] = []

    def gen(self, item_id: str | None) -> Generation:
        return Generation(reviewer="queue", prompt=f"q {item_id}", candidates=["A", "B"], version="base",
                          sampling=SAMPLING, prompt_tokens=2, item_id=item_id)  # fmt: skip

    def add(self, gen: Generation, reviewer: str, action: str, **fields) -> Judgement:
        n = len(self.judgements)
        fb = Feedback(reviewer=reviewer, generation_id=gen.id, action=action, created_at=T0 + timedelta(minutes=n), **fields)
        j = Judgement(100 * (n + 1), fb, gen)
        self.judgements.append(j)
        return j


def test_with_one_review_per_item_every_judgement_trains() -> None:
    log = Log()
    g = log.gen("i1")
    log.add(g, "a", "accept")
    log.add(log.gen(None), "b", "reject", reason="wrong")
    assert training_judgements(log.judgements, 1, 0.6) == log.judgements
    assert resolved_count(log.judgements, 1, 0.6, after=150) == 1


def test_agreement_trains_the_consensus_once_at_the_deciding_judgement() -> None:
    log = Log()
    g = log.gen("i1")
    log.add(g, "a", "rank", ranking=[[1], [0]])
    deciding = log.add(g, "b", "rank", ranking=[[1], [0]])
    used = training_judgements(log.judgements, 2, 0.6)
    assert [(j.feedback.reviewer, j.feedback.action, j.feedback.ranking) for j in used] == [(CONSENSUS_REVIEWER, "rank", [[1], [0]])]
    assert used[0].offset == deciding.offset
    again = training_judgements(log.judgements, 2, 0.6)
    assert again[0].feedback.id == used[0].feedback.id  # a fixed id: the hold-out draw never changes
    assert resolved_count(log.judgements, 2, 0.6) == 1 and resolved_count(log.judgements, 2, 0.6, after=deciding.offset + 1) == 0


def test_disagreement_trains_only_edits_until_adjudicated() -> None:
    log = Log()
    g = log.gen("i1")
    log.add(g, "a", "accept")
    edit = log.add(g, "b", "edit", text="A, but see a doctor within a day.")
    items, typed = group_by_item(log.judgements)
    assert typed == [] and item_state(items["i1"], 2, 0.6) == "disputed"
    assert training_judgements(log.judgements, 2, 0.6) == [edit]
    assert resolved_count(log.judgements, 2, 0.6) == 0
    settled = log.add(g, "admin", "accept", settles="i1")
    items, _ = group_by_item(log.judgements)
    assert item_state(items["i1"], 2, 0.6) == "adjudicated"
    assert training_judgements(log.judgements, 2, 0.6) == [edit, settled]
    assert resolved_count(log.judgements, 2, 0.6) == 1


def test_an_item_short_of_reviews_waits_and_typed_questions_train_as_before() -> None:
    log = Log()
    log.add(log.gen("i1"), "a", "accept")
    typed = log.add(log.gen(None), "a", "accept")
    items, _ = group_by_item(log.judgements)
    assert item_state(items["i1"], 2, 0.6) == "open"
    assert training_judgements(log.judgements, 2, 0.6) == [typed]
    assert resolved_count(log.judgements, 2, 0.6) == 1


def test_agreed_labels_become_consensus_accepts_and_rejects() -> None:
    log = Log()
    g = log.gen("i1")
    for reviewer in ("a", "b", "c"):
        log.add(g, reviewer, "accept", candidate=0)
    for reviewer, action in (("a", "reject"), ("b", "reject"), ("c", "accept")):
        log.add(g, reviewer, action, candidate=1, **({"reason": "unsafe"} if action == "reject" else {}))
    used = training_judgements(log.judgements, 3, 0.6)
    assert sorted((j.feedback.action, j.feedback.candidate) for j in used) == [("accept", 0), ("reject", 1)]
    assert all(j.feedback.reviewer == CONSENSUS_REVIEWER for j in used)
