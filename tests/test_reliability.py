"""Reliability under concurrent load: many logged-in clients judging at once through the API.

The app runs on the tiny model, so the load falls on the server, the store and its lock, not on
decoding. Bounded in time: 16 clients x 200 judgements take about a minute here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hitl_app.feedback.records import Feedback, Generation, Sampling
from tests.helpers import api_client

log = logging.getLogger(__name__)

CLIENTS = 16
JUDGEMENTS = 200
USERS = [(f"dr{i:02d}", f"pw-{i:02d}") for i in range(CLIENTS)]


APP_AUTH = [f"{u}:{p}" for u, p in USERS]
APP_OPTIONS = {"auto_retrain": False}


@pytest.mark.stress
def test_r1_concurrent_clients_lose_and_duplicate_nothing(app) -> None:
    service = app.service
    sampling = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8)
    # One generation per clinician to judge (the model is not what is under test here).
    generations = {}
    for user, _ in USERS:
        gen = Generation(reviewer=user, prompt="What is asthma?", candidates=["An airway disease."], version="base",
                         sampling=sampling, prompt_tokens=5)
        service.store.append(gen)
        generations[user] = gen.id
    before = service.store.path.stat().st_size
    acknowledged: dict[str, list[str]] = {}
    errors: list[str] = []
    start = threading.Barrier(CLIENTS)

    def judge(user: str, password: str) -> None:
        try:
            client = api_client(app.url, (user, password))
            start.wait()
            ids = []
            for i in range(JUDGEMENTS):
                if i % 2:
                    saved = client.predict(generations[user], f"Wrong: case {user}-{i}", api_name="/reject")
                else:
                    saved = client.predict(generations[user], f"Corrected answer {user}-{i}.", api_name="/edit")
                assert saved["saved"] and saved["reviewer"] == user
                ids.append(saved["feedback_id"])
            acknowledged[user] = ids
        except Exception as exc:  # reported below with the user, so one failure names itself
            errors.append(f"{user}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=judge, args=user) for user in USERS]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.perf_counter() - started
    assert not errors, errors[:3]
    total = CLIENTS * JUDGEMENTS
    log.info("R1: %d judgements from %d clients in %.1f s: %.0f judgements/s", total, CLIENTS, elapsed, total / elapsed)

    # Every line written since is a complete, valid record, and there are exactly `total`.
    with service.store.path.open("rb") as f:
        f.seek(before)
        lines = f.read().splitlines()
    records = [Feedback.model_validate(json.loads(line)) for line in lines]
    assert len(records) == total
    ids = [r.id for r in records]
    assert len(set(ids)) == total
    assert set(ids) == {i for user_ids in acknowledged.values() for i in user_ids}
    # Each clinician's records are theirs, on their generation, each text exactly once.
    by_user = Counter(r.reviewer for r in records)
    assert by_user == {user: JUDGEMENTS for user, _ in USERS}
    for r in records:
        assert r.generation_id == generations[r.reviewer]
        assert r.reviewer in (r.text or r.reason or "")
    texts = [r.text or r.reason for r in records]
    assert len(set(texts)) == total
    service.ledger.refresh()
    assert service.ledger.corrupt == []
    assert service.status().since_last_version >= total


# ----- R4: bad input through the API -----
def _lines(app) -> int:
    return len(app.service.store.path.read_bytes().splitlines())


def _generation(app, reviewer: str, candidates: int = 1) -> str:
    answers = [f"A raised temperature ({i})." for i in range(candidates)]
    gen = Generation(reviewer=reviewer, prompt="What is a fever?", candidates=answers, version="base",
                     sampling=Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8), prompt_tokens=5)
    app.service.store.append(gen)
    return gen.id


@pytest.mark.parametrize(
    ("endpoint", "args", "message"),
    [
        ("/ask", ("",), "the question is empty"),
        ("/ask", ("   \n\t ",), "the question is empty"),
        ("/ask", ("What is a fever? " * 6000,), "tokens long; this model reads at most"),  # ~100,000 characters
        ("/ask", ("Fever\x00\x07?",), "the question contains control characters"),
        ("/ask", (["a", "list"],), "the question is empty"),  # wrong type
        ("/reject", ("GEN", "bad\x1b[31m"), "the reason contains control characters"),
        ("/edit", ("GEN", "Fine.\x7f"), "the edit contains control characters"),
        ("/accept", ("GEN", "first"), "candidate must be a whole number"),  # wrong type
        ("/accept", ("GEN", 7), "candidate 7 does not exist"),
        ("/accept", ("no-such-id",), "unknown generation id"),
        ("/rank", ("GEN2", {"not": "a ranking"}), "a ranking is a list of candidate indices"),
    ],
    ids=["empty", "blank", "100k-chars", "nul-bel", "list-prompt", "reason-escape", "edit-del", "wrong-type",
         "bad-candidate", "unknown-generation", "rank-dict"],
)
def test_r4_bad_input_gets_a_specific_error_and_stores_nothing(app, endpoint: str, args: tuple, message: str) -> None:
    user, password = USERS[0]
    client = api_client(app.url, (user, password))
    ids = {"GEN": _generation(app, user), "GEN2": _generation(app, user, candidates=2)}
    before = _lines(app)
    with pytest.raises(Exception, match=message):
        client.predict(*[ids.get(a, a) if isinstance(a, str) else a for a in args], api_name=endpoint)
    assert _lines(app) == before
    app.service.ledger.refresh()
    assert app.service.ledger.corrupt == []


def test_r4_markup_is_stored_as_text_and_anyone_may_judge_anyones_question(app) -> None:
    """HTML in edits and reasons is kept verbatim as text (the UI renders it as text, never as
    markup). Judging another clinician's question is allowed: review is shared work, and each
    judgement records who made it."""
    author, judge = USERS[0], USERS[1]
    gen_id = _generation(app, author[0])
    client = api_client(app.url, judge)
    html = 'Correct dose.<img src=x onerror=alert(1)><script>alert("x")</script>'
    edited = client.predict(gen_id, html, api_name="/edit")
    rejected = client.predict(gen_id, "<b>wrong</b> & dangerous", api_name="/reject")
    stored = {j.feedback.id: j.feedback for j in app.service.ledger.judgements()}
    assert stored[edited["feedback_id"]].text == html
    assert stored[rejected["feedback_id"]].reason == "<b>wrong</b> & dangerous"
    assert {stored[edited["feedback_id"]].reviewer, stored[rejected["feedback_id"]].reviewer} == {judge[0]}


@pytest.mark.parametrize(("endpoint", "payload"), [("ask", ["Fever\ud800?", None]), ("reject", ["GEN", "bad \udfff", 0])])
def test_r4_lone_surrogates_get_a_specific_error_and_store_nothing(app, endpoint: str, payload: list) -> None:
    """Broken Unicode arrives as an escaped lone surrogate in the JSON body (a client library
    cannot even encode it, so this goes through raw HTTP, logged in, with every input given)."""
    import httpx

    user, password = USERS[0]
    gen_id = _generation(app, user)
    body = json.dumps({"data": [gen_id if p == "GEN" else p for p in payload]}, ensure_ascii=True)
    assert "\\ud" in body or "\\udfff" in body  # the surrogate travels escaped
    before = _lines(app)
    with httpx.Client(base_url=app.url.rstrip("/"), timeout=30) as http:
        assert http.post("/login", data={"username": user, "password": password}).status_code in (200, 302, 303)
        call = http.post(f"/gradio_api/call/{endpoint}", content=body, headers={"content-type": "application/json"})
        assert call.status_code == 200, call.text
        events = http.get(f"/gradio_api/call/{endpoint}/{call.json()['event_id']}").text
    assert "event: error" in events and "lone surrogate" in events, events
    assert _lines(app) == before


def test_r5_the_stored_reviewer_cannot_be_spoofed(app) -> None:
    """No endpoint takes a reviewer; one smuggled into a request as an extra value or a field is
    refused or ignored, and the record carries the login's name."""
    import httpx

    user, password = USERS[2]
    gen_id = _generation(app, user)
    before = _lines(app)
    with httpx.Client(base_url=app.url.rstrip("/"), timeout=30) as http:
        assert http.post("/login", data={"username": user, "password": password}).status_code in (200, 302, 303)
        for body in (
            {"data": [gen_id, "mallory's reason", 0, "mallory"]},  # an extra positional value
            {"data": [gen_id, "a reason", 0], "reviewer": "mallory", "username": "mallory"},  # extra fields
        ):
            call = http.post("/gradio_api/call/reject", json=body)
            if call.status_code == 200:
                http.get(f"/gradio_api/call/reject/{call.json()['event_id']}")
    app.service.ledger.refresh()
    stored = [j.feedback for j in app.service.ledger.judgements() if j.feedback.generation_id == gen_id]
    assert stored, "the well-formed request was not stored"
    assert {fb.reviewer for fb in stored} == {user}
    assert _lines(app) - before == len(stored)
