"""Team review through the HTTP API: three reviewers with a designed pattern of agreement, whose
figures must equal the ``krippendorff`` package's and a hand-worked case; skip and audit."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from tests.helpers import ADMIN, api_client, wait_for

REVIEWERS = [("dr-a", "a-pw"), ("dr-b", "b-pw"), ("dr-c", "c-pw")]
APP_AUTH = [f"{ADMIN[0]}:{ADMIN[1]}:admin", *(f"{u}:{p}" for u, p in REVIEWERS)]
APP_OPTIONS = {"reviews_per_item": 3, "candidates": 2}

# Each reviewer's verdict on candidate 0 of each item (1 accept, 0 reject): A and B always agree,
# C agrees with them on the first and last item only.
DESIGN = {
    "Is a resting pulse of 48 normal for a runner?": (1, 1, 1),
    "Should I stop my statin before a dental filling?": (0, 0, 1),
    "How long should I rest after a mild concussion?": (1, 1, 0),
    "Can I give honey to my four-month-old for a cough?": (0, 0, 0),
}


def test_three_reviewers_agreement_matches_krippendorff_and_the_hand_worked_case(app, tmp_path: Path) -> None:
    from hitl_app.core.config import Settings
    from hitl_app.service.data_commands import import_command

    questions = tmp_path / "set.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in DESIGN), encoding="utf-8")
    # Imported beside the running app, as `python main.py import` does: the app sees the items.
    settings = Settings(feedback_dir=app.settings.feedback_dir, checkpoints_dir=app.settings.checkpoints_dir)
    report = import_command(settings, questions, "ops", None, "designed", priority=10)
    assert report.imported == 4
    clients = [api_client(app.url, login) for login in REVIEWERS]
    for index, client in enumerate(clients):
        for _ in DESIGN:
            item = client.predict(api_name="/next")
            assert item["prompt"] in DESIGN and item["batch"] == "designed"
            if DESIGN[item["prompt"]][index]:
                client.predict(item["generation_id"], api_name="/accept")
            else:
                client.predict(item["generation_id"], "not safe", api_name="/reject")
    figures = clients[0].predict(api_name="/agreement")

    matrix = np.array([[row[i] for row in DESIGN.values()] for i in range(3)], dtype=float)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    # By hand: the coincidence matrix has o00 = o11 = 4 and o01 = o10 = 2 (n = 12), so
    # D_o = 4/12 and D_e = 2 * 6 * 6 / (12 * 11) = 6/11, and alpha = 1 - (1/3) / (6/11) = 7/18.
    assert figures["team"]["alpha_nominal"] == pytest.approx(expected) == pytest.approx(float(Fraction(7, 18)))
    assert figures["team"]["items_nominal"] == 4 and figures["batches"]["designed"]["items_nominal"] == 4
    kappas = {(p["a"], p["b"]): p["kappa"] for p in figures["pairs"]}
    # A and B agree everywhere: kappa 1. A and C agree on 2 of 4 with both at 1/2 accept: p_o = p_e = 1/2, kappa 0.
    assert kappas[("dr-a", "dr-b")] == pytest.approx(1.0) and kappas[("dr-a", "dr-c")] == pytest.approx(0.0)
    with_consensus = {r["reviewer"]: r["agreement_with_consensus"] for r in figures["reviewers"]}
    assert with_consensus["dr-a"] == pytest.approx(1.0) and with_consensus["dr-c"] == pytest.approx(0.5)

    admin = api_client(app.url, ADMIN)
    assert admin.predict(api_name="/adjudications") == []  # 2 of 3 always agree at the 0.6 threshold
    page = admin.predict(api_name="/audit", kind="judgement")
    assert page["total"] == 12 and {row["who"] for row in page["rows"]} == {"dr-a", "dr-b", "dr-c"}
    with pytest.raises(Exception, match="only an admin"):
        clients[0].predict(api_name="/audit")


def test_next_and_skip_through_the_api(app) -> None:
    client = api_client(app.url, REVIEWERS[0])
    item = client.predict(api_name="/next")
    assert item["item_id"] and item["candidates"] and item["version"] == "base"
    progress = client.predict(item["item_id"], api_name="/skip")
    assert progress["skipped"] == 1
    following = client.predict(api_name="/next")
    assert following["item_id"] != item["item_id"]
    wait_for(lambda: app.service.queue.skipped(item["item_id"], REVIEWERS[0][0]), timeout_s=5)


def test_ratings_through_the_api_need_the_rubric_on(app) -> None:
    client = api_client(app.url, REVIEWERS[1])
    rubric = client.predict(api_name="/rubric")
    assert rubric == {"on": False, "axes": []}
    gen = client.predict("How much paracetamol can an adult take in a day?", api_name="/ask")
    with pytest.raises(Exception, match="--rubric on"):
        client.predict(gen["generation_id"], "accept", {"bias": "none"}, api_name="/rate")
    with pytest.raises(Exception, match="accepts, edits or rejects"):
        client.predict(gen["generation_id"], "rank", {}, api_name="/rate")
