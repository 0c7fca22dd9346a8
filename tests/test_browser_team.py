"""Team review in a real browser: import a set, two reviewers take the same item and disagree, the
admin settles it and downloads the export.

The module has its own app (two reviews per item), and shares the browser, the page fixture and
the login helper with ``test_browser.py``.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import ADMIN, CLINICIAN, QUESTION_SET
from tests.test_browser import ARTIFACTS, _login, _teach, browser, page  # noqa: F401  (fixtures, used by name)

pytestmark = pytest.mark.browser

APP_OPTIONS = {
    "reviews_per_item": 2,  # the clinician and the admin both judge each item
    "auto_retrain": False,
    "redteam_prompts": 0,
    "max_new_tokens": 96,
    "temperature": 0.0,  # greedy: both reviewers see one known set of candidates
    "rubric": "on",
}
SET = QUESTION_SET
# What the taught tiny base answers to the first queued question, so the screenshot shows a readable answer.
CANDIDATE = "Rest it, ice it and keep it raised; see a doctor if you cannot walk on it."


def APP_BASE(root: Path, tiny_base: Path) -> Path:
    """The tiny base taught the answer to the first queued question."""
    return _teach(tiny_base, root / "taught-base", {SET[0]["question"]: CANDIDATE})


def _textbox(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea")


def _next_and_judge(page, action: str, photograph: bool = False) -> None:
    """Take the next queued item in the Review tab and judge its first candidate (``photograph``:
    save the tab with the item shown, for the docs: ``make screenshot``)."""
    page.get_by_role("tab", name="Review").click()
    page.locator("#next-question").click()
    expect(_textbox(page, "question")).to_have_value(SET[0]["question"])
    expect(page.locator("#queue-item")).to_contain_text("batch: ward")
    expect(page.locator("#queue-item")).to_contain_text("specialty: orthopaedics")
    page.get_by_role("button", name=re.compile("^Reference answer from the imported question set")).click()
    expect(_textbox(page, "queue-reference")).to_have_value(SET[0]["answer"])
    expect(_textbox(page, "answer-0")).to_have_value(CANDIDATE)
    if photograph:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)
    if action == "reject":
        _textbox(page, "reject-reason").fill("Misses the red flags for a fracture.")
        page.locator("#reject").click()
    else:
        # Rate one rubric axis; the rating goes with the judgement and the dropdown is then cleared.
        page.get_by_role("button", name="Rubric ratings").click()
        consensus = page.locator("#rubric-consensus input")
        consensus.click()
        page.get_by_role("option", name="agrees", exact=True).click()
        expect(consensus).to_have_value("agrees")
        page.locator("#accept").click()
    expect(_textbox(page, "result")).to_have_value(re.compile(rf"^Saved {action} \(\w{{8}}\)"))
    expect(page.locator("#queue-progress")).to_contain_text("1 done, 0 skipped")
    if action == "accept":
        expect(page.locator("#rubric-consensus input")).to_have_value("")


def test_team_review_in_the_browser(app, page, browser, tmp_path: Path) -> None:  # noqa: F811
    question_set = tmp_path / "ward-questions.jsonl"
    question_set.write_text("".join(json.dumps(row) + "\n" for row in SET), encoding="utf-8")

    # 1. The admin imports the set in the Team tab, ahead of the shipped questions.
    _login(page, app, ADMIN)
    page.get_by_role("tab", name="Team").click()
    page.locator("#import-file input[type=file]").set_input_files(str(question_set))
    expect(page.locator("#import-file")).to_contain_text("ward-questions.jsonl")
    _textbox(page, "import-batch").fill("ward")
    page.locator("#import-priority input").fill("5")
    page.locator("#import-button").click()
    expect(_textbox(page, "import-result")).to_have_value(
        re.compile(r"^imported 2 question\(s\) from ward-questions\.jsonl as batch 'ward'")
    )

    # 2. The admin and a clinician each take the item with Next, and disagree.
    _next_and_judge(page, "reject", photograph=True)
    clinician_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = clinician_context.new_page()
        _login(other, app, CLINICIAN)
        _next_and_judge(other, "accept")
        other.get_by_role("tab", name="Team").click()
        expect(other.locator("#team-note")).to_contain_text("for admins")
        assert other.locator("#import-button").count() == 0
    finally:
        clinician_context.close()
    [(item_id, rubric)] = [(j.generation.item_id, j.feedback.rubric) for j in app.service.ledger.judgements()
                           if j.feedback.reviewer == CLINICIAN[0]]  # fmt: skip
    assert item_id is not None and rubric == {"consensus": "agrees"}

    # 3. The admin settles it in Adjudication: both judgements are shown side by side.
    page.get_by_role("tab", name="Team").click()
    page.locator("#adjudicate-refresh").click()
    expect(page.locator("#adjudicate-table")).to_contain_text(item_id[:8])
    detail = page.locator("#adjudicate-detail")
    expect(detail).to_contain_text("drlee")
    expect(detail).to_contain_text("Misses the red flags for a fracture.")
    expect(page.locator("#adjudicate-item input")).to_have_value(re.compile(f"^{item_id[:8]}"))
    page.locator("#adjudicate-action").get_by_label("accept").check()
    page.locator("#adjudicate-button").click()
    expect(_textbox(page, "adjudicate-result")).to_have_value(re.compile(rf"^Settled item {item_id[:8]}: accept candidate 1"))
    expect(page.locator("#adjudicate-table")).not_to_contain_text(item_id[:8])
    settled = [j.feedback for j in app.service.ledger.judgements() if j.feedback.settles == item_id]
    assert [(fb.reviewer, fb.action) for fb in settled] == [(ADMIN[0], "accept")]

    # 4. A raw export of the batch downloads as a zip holding the three judgements.
    kind = page.locator("#export-kind input")
    kind.click()
    page.get_by_role("option", name="raw", exact=True).click()
    expect(kind).to_have_value("raw")
    _textbox(page, "export-batch").fill("ward")
    page.locator("#export-button").click()
    expect(_textbox(page, "export-result")).to_have_value(re.compile(r"^Exported 3 raw row\(s\) from 3 judgement\(s\)"))
    with page.expect_download() as download:
        page.locator("#export-file a").first.click()
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as z:
        rows = [json.loads(line) for line in z.read("raw-dataset/data/train.jsonl").decode().splitlines()]
    assert sorted(r["action"] for r in rows) == ["accept", "accept", "reject"]
    assert {r["item_id"] for r in rows} == {item_id}

    # 5. The audit log shows the adjudication, one page of it.
    page.get_by_role("button", name="Audit log").click()
    page.locator("#audit-kind input").click()
    page.get_by_role("option", name="adjudication", exact=True).click()
    page.locator("#audit-button").click()
    expect(page.locator("#audit-table")).to_contain_text(f"settled item {item_id[:8]}")
    expect(page.locator("#audit-pages")).to_contain_text("Page 1 of 1 · 1 event(s)")

    # 6. The Dashboard's agreement tables show the pair who disagreed.
    page.get_by_role("tab", name="Dashboard").click()
    expect(page.locator("#agreement-pairs")).to_contain_text("drlee")
    page.get_by_role("button", name="Rubric ratings per version").click()
    expect(page.locator("#rubric-counts")).to_contain_text("agrees")
    assert page.dialogs == []
