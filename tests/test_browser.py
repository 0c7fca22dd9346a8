"""The clinicians' UI in a real browser: Playwright (sync API) driving Debian's chromium.

One app (server, model manager, trainer process) on the tiny model serves the module, with a
login, so the login page is exercised too. The main test walks the whole loop as a clinician who
is also an admin: log in, ask, watch the answer stream, accept, edit and reject, retrain with the
progress bar showing, see the version badge move to the new version, and roll back to base in the
Versions tab. The second test saves markup as an edit and a reason and checks it stays text.

A failing test leaves a screenshot in test-artifacts/browser/ (gitignored); the main test also
saves the Review tab with an answer shown there (review-tab.png, copied to docs/ by
`make screenshot`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.helpers import ADMIN, CLINICIAN, REPO

pytestmark = pytest.mark.browser

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
# Without these, chromium here tries network hosts that this machine refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "browser"
UI_TIMEOUT_MS = 30_000
RETRAIN_TIMEOUT_MS = 120_000
STEP_DELAY_S = 0.05  # per decoding step while the stream is watched: an answer takes about 2 s
# The tiny base is random, so it is first taught these answers (greedy decoding then gives them
# back word for word): the stream, the edit box and the screenshot show readable text.
HYPERTENSION = "What is the first-line treatment for hypertension in adults?"
LESSONS = {
    HYPERTENSION: "A thiazide diuretic or an ACE inhibitor; then recheck.",
    "What is asthma?": "A chronic inflammatory disease of the airways.",
}


def _teach(source: Path, target: Path, lessons: dict[str, str], max_steps: int = 300) -> Path:
    """Copy the tiny base to ``target`` after overfitting it on ``lessons`` (question -> answer).

    The questions go through the chat template with the app's default system prompt, as the app
    asks them; only the answer tokens (and the end-of-turn token) are trained on.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hitl_app.core.config import DEFAULT_SYSTEM_PROMPT

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    examples = []
    for question, answer in lessons.items():
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        prompt_ids = list(prompt["input_ids"])
        ids = prompt_ids + tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        examples.append((torch.tensor([ids]), torch.tensor([labels])))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: more threads only contend with the other tests' processes
    try:
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
        model.train()
        for _ in range(max_steps):
            loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels in examples)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 0.05:
                break
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def APP_BASE(root: Path, tiny_base: Path) -> Path:
    """The tiny base taught the lessons, so answers are the known ones."""
    return _teach(tiny_base, root / "taught-base", LESSONS)


APP_OPTIONS = {
    "auto_retrain": False,  # the admin starts the round from the UI
    "gate": "off",  # the tiny model's round is served whatever its figures
    "redteam_prompts": 0,
    "eval_probe_prompts": 2,
    "max_new_tokens": 48,
    "temperature": 0.0,  # greedy: the taught answer on every run
}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: "
            "run `make test` (as root) or `apt-get install -y chromium`"
        )
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh browser context; its dialogs are recorded (and dismissed) in ``page.dialogs``.

    If the test fails, the page is saved to test-artifacts/browser/<test name>.png.
    """
    failed_before = request.session.testsfailed
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    pg = context.new_page()
    pg.dialogs = []

    def on_dialog(dialog) -> None:
        pg.dialogs.append((dialog.type, dialog.message))
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    # The call phase's report is logged before teardown, so a failure has been counted by now.
    if request.session.testsfailed > failed_before:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        with contextlib.suppress(Exception):
            pg.screenshot(path=str(shot), full_page=True)
            log.error("browser test failed; screenshot at %s", shot)
    context.close()


# ----- helpers -----
def _login(page, app, user: tuple[str, str]) -> None:
    page.goto(app.url)
    page.get_by_label("username").fill(user[0])
    page.get_by_label("password").fill(user[1])
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#question textarea")).to_be_visible()


def _records(app) -> list[dict]:
    path = app.service.store.path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _feedback(app, action: str) -> list[dict]:
    return [r for r in _records(app) if r["kind"] == "feedback" and r["action"] == action]


@contextlib.contextmanager
def _slow_decoding(app, delay_s: float):
    """Sleep before every forward pass of the serving model, so the stream is slow enough to watch."""
    model = app.service.models.model.get_base_model()
    handle = model.register_forward_pre_hook(lambda module, args: time.sleep(delay_s))
    try:
        yield
    finally:
        handle.remove()


def _watch_textarea(page, selector: str) -> None:
    """Record every value the textarea shows, once per animation frame, in ``window.__seen``."""
    page.evaluate(
        """(selector) => {
            window.__seen = [];
            const tick = () => {
                const box = document.querySelector(selector);
                const value = box ? box.value : null;
                if (value !== null && window.__seen[window.__seen.length - 1] !== value) window.__seen.push(value);
                window.__watch = requestAnimationFrame(tick);
            };
            tick();
        }""",
        selector,
    )


def _seen(page) -> list[str]:
    return page.evaluate("() => { cancelAnimationFrame(window.__watch); return window.__seen; }")


def _badge(page):
    return page.locator("#version-badge")


def _result(page):
    return page.locator("#result textarea")


# ----- tests -----
def test_review_retrain_and_roll_back_in_the_browser(app, page) -> None:
    # 1. The login page: a wrong password is refused, the right one opens the app.
    page.goto(app.url)
    page.get_by_label("username").fill(ADMIN[0])
    page.get_by_label("password").fill("wrong")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text(re.compile("incorrect", re.I))).to_be_visible()
    _login(page, app, ADMIN)
    expect(_badge(page)).to_contain_text("Model version: base")
    expect(page.locator("#status")).to_contain_text("Serving: base")

    # 2-3. Ask; the answer streams in, only ever growing, and ends as the stored generation.
    answer = page.locator("#answer-0 textarea")
    page.locator("#question textarea").fill(HYPERTENSION)
    _watch_textarea(page, "#answer-0 textarea")
    with _slow_decoding(app, STEP_DELAY_S):
        page.locator("#ask").click()
        expect(answer).not_to_have_value("")
        # The edit box is filled only by the stream's last update, which carries the stored generation.
        expect(page.locator("#edit-text textarea")).not_to_have_value("")
    stored = [r for r in _records(app) if r["kind"] == "generation"]
    assert len(stored) == 1, stored
    final = stored[0]["candidates"][0]
    assert final == LESSONS[HYPERTENSION], final
    expect(answer).to_have_value(final)
    seen = [v for v in _seen(page) if v]
    assert len(seen) >= 2, f"the answer did not stream: the box showed only {seen!r}"
    assert all(final.startswith(v) for v in seen), f"a streamed value is not a prefix of the answer: {seen!r}"
    assert [len(v) for v in seen] == sorted(len(v) for v in seen), seen
    expect(page.locator("#answer-0")).to_contain_text("Candidate 1 · base")
    expect(page.locator("#safety-flags")).to_contain_text("Safety checks No flags.")
    expect(page.locator("#edit-text textarea")).to_have_value(final)  # the edit box starts from the answer
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-tab.png"), full_page=True)

    # 4-6. Accept, edit, reject; each is confirmed in "Last action" and lands in the store.
    page.locator("#accept").click()
    expect(_result(page)).to_have_value(re.compile(r"^Saved accept \(\w{8}\) by admin\."))
    edited = "Start a thiazide diuretic or an ACE inhibitor, then review in four weeks."
    page.locator("#edit-text textarea").fill(edited)
    page.locator("#save-edit").click()
    expect(_result(page)).to_have_value(re.compile(r"^Saved edit \(\w{8}\) by admin\."))
    page.locator("#reject-reason textarea").fill("Too vague: no drug or dose.")
    page.locator("#reject").click()
    expect(_result(page)).to_have_value(re.compile(r"^Saved reject \(\w{8}\) by admin\."))
    generation_id = stored[0]["id"]
    expected = [("accept", None, None), ("edit", "text", edited), ("reject", "reason", "Too vague: no drug or dose.")]
    for action, field, value in expected:
        (record,) = _feedback(app, action)
        assert record["generation_id"] == generation_id and record["reviewer"] == ADMIN[0]
        assert record["candidate"] == 0
        if field:
            assert record[field] == value
    expect(page.locator("#status")).to_contain_text("3 judgements (3 since the last version)")

    # 7. Retrain as admin: Gradio's progress bar shows while the round runs, then the outcome.
    page.locator("#retrain").click()
    retrain_box = page.locator("#retrain-result")
    progress = retrain_box.get_by_role("progressbar")
    expect(progress).to_be_visible()
    expect(retrain_box.locator(".progress-level-inner")).to_contain_text(re.compile(r"\S+ - \d+(\.\d+)?%"))
    expect(retrain_box.locator(".progress-text")).to_contain_text(re.compile(r"\d+\.\ds"))  # elapsed time
    expect(progress).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]"))  # the round moves
    expect(page.locator("#status")).to_contain_text("Trainer: training")
    expect(page.locator("#retrain-result textarea")).to_have_value(
        "published and serving v0001", timeout=RETRAIN_TIMEOUT_MS
    )
    expect(progress).to_have_count(0)

    # 8. The badge and the status panel follow the hot-swapped version.
    expect(_badge(page)).to_contain_text("Model version: v0001")
    expect(page.locator("#status")).to_contain_text("Serving: v0001")
    assert app.service.models.version == "v0001"

    # 9. Roll back to base in the Versions tab.
    page.get_by_role("tab", name="Versions").click()
    page.get_by_role("button", name="Refresh").click()
    table = page.locator("#versions-table")
    expect(table).to_contain_text("v0001")
    expect(table.locator("tbody tr").first).to_contain_text("serving")
    choice = page.locator("#version-choice input")
    expect(choice).to_have_value("v0001")
    choice.click()
    page.get_by_role("option", name="base", exact=True).click()
    expect(choice).to_have_value("base")
    page.locator("#activate").click()
    expect(page.locator("#activate-result textarea")).to_have_value("Now serving base (was v0001).")
    expect(page.locator("#status")).to_contain_text("Serving: base")
    assert app.service.models.version == "base"
    page.get_by_role("tab", name="Review").click()
    expect(_badge(page)).to_contain_text("Model version: base")
    assert page.dialogs == []


XSS_EDIT = "Rest. <img src=x onerror=alert(1)> <script>alert(2)</script> Then review."
XSS_REASON = '<img src=x onerror="alert(3)"><b>bold</b> no dose given'


def test_markup_in_edits_and_reasons_is_saved_and_shown_as_text(app, page) -> None:
    _login(page, app, CLINICIAN)
    page.locator("#question textarea").fill("What is asthma?")
    page.locator("#ask").click()
    expect(page.locator("#answer-0 textarea")).not_to_have_value("")
    expect(page.locator("#edit-text textarea")).not_to_have_value("")  # the answer is finished

    page.locator("#edit-text textarea").fill(XSS_EDIT)
    page.locator("#save-edit").click()
    expect(_result(page)).to_have_value(re.compile(r"^Saved edit \(\w{8}\) by drlee\."))
    page.locator("#reject-reason textarea").fill(XSS_REASON)
    page.locator("#reject").click()
    expect(_result(page)).to_have_value(re.compile(r"^Saved reject \(\w{8}\) by drlee\."))

    # Shown as the literal characters, and stored as typed.
    expect(page.locator("#edit-text textarea")).to_have_value(XSS_EDIT)
    expect(page.locator("#reject-reason textarea")).to_have_value(XSS_REASON)
    assert [r["text"] for r in _feedback(app, "edit") if r["reviewer"] == CLINICIAN[0]] == [XSS_EDIT]
    assert [r["reason"] for r in _feedback(app, "reject") if r["reviewer"] == CLINICIAN[0]] == [XSS_REASON]

    # Nothing was turned into markup, and no script ran.
    page.wait_for_timeout(500)  # let any onerror handler fire before checking that none did
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("script", has_text="alert(").count() == 0
    assert page.locator("b", has_text="bold").count() == 0
    assert page.dialogs == []
