"""Concurrent questions answered together: one batched call, the same answers as one at a time.

Requests are queued while the test holds the generation lock, so they are all waiting when it is
released; the first to take the lock answers every compatible one in one ``generate`` call.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch

from hitl_app.feedback.records import Sampling
from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.serving.batching import AnswerRequest, PendingAnswers, RowLimits
from hitl_app.serving.fastpath import build_serving_copy
from hitl_app.serving.manager import ModelManager
from hitl_app.versions.registry import Registry

from test_models import SYSTEM, published, slot_config  # noqa: F401  (the module fixture)

PROMPTS = [
    "What is the first-line treatment for hypertension?",
    "Fever?",
    "How should a patient with type 2 diabetes and chronic kidney disease adjust metformin?",
    "Is ibuprofen safe in pregnancy?",
]


def greedy(max_new_tokens: int = 8) -> Sampling:
    return Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=max_new_tokens)


@pytest.fixture(params=["peft", "merged copy"])
def manager(request: pytest.FixtureRequest, tiny_base: Path, published: Path, tmp_path: Path):  # noqa: F811
    registry = Registry(shutil.copytree(published, tmp_path / "checkpoints"))
    registry.set_active("v0001", by="test", reason="serve an adapter")
    base = load_base(tiny_base, LoadOptions(device="cpu"))
    dtype = torch.float32 if request.param == "merged copy" else None
    models = ModelManager.wrap(base, load_tokenizer(tiny_base), registry, greedy(), SYSTEM, slot_config(), dtype)
    if request.param == "merged copy":
        assert models.fast is not None
    yield models
    models.close()


class GenerateCalls:
    """Counts the batched ``generate`` calls and the rows of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import hitl_app.serving.fast_serving as fast_serving

        self.rows: list[int] = []
        original = fast_serving.generate_answer

        def spy(peft_model, fast, version, kwargs):
            self.rows.append(int(kwargs["input_ids"].shape[0]) * int(kwargs.get("num_return_sequences") or 1))
            return original(peft_model, fast, version, kwargs)

        monkeypatch.setattr(fast_serving, "generate_answer", spy)


def ask_together(manager: ModelManager, jobs: list[dict]) -> list:
    """Start every job's ``generate`` while the lock is held, release it once all are queued; their results."""
    results: list = [None] * len(jobs)

    def ask(i: int) -> None:
        try:
            results[i] = manager.generate(**jobs[i])
        except Exception as exc:  # handed to the test below
            results[i] = exc

    with manager._lock:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        deadline = threading.Event()
        for _ in range(500):
            if len(manager.pending) == len(jobs):
                break
            deadline.wait(0.01)
        assert len(manager.pending) == len(jobs), "the requests never queued"
    for t in threads:
        t.join(60)
    return results


def test_concurrent_greedy_answers_are_batched_and_equal_the_unbatched_ones(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths = [8, 3, 8, 5]  # each request keeps its own answer length inside the batch
    alone = [manager.generate(p, sampling=greedy(n)) for p, n in zip(PROMPTS, lengths)]
    calls = GenerateCalls(monkeypatch)
    together = ask_together(manager, [{"prompt": p, "sampling": greedy(n)} for p, n in zip(PROMPTS, lengths)])
    assert calls.rows == [len(PROMPTS)], "four waiting questions should be answered in one call of four rows"
    for single, batched, n in zip(alone, together, lengths):
        assert not isinstance(batched, Exception), batched
        assert batched.candidates == single.candidates
        assert batched.version == single.version == "v0001"
        assert batched.prompt_tokens == single.prompt_tokens
        assert batched.new_tokens == single.new_tokens <= n


def test_a_lone_request_is_answered_as_before(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = GenerateCalls(monkeypatch)
    answer = manager.generate(PROMPTS[0], k=1)
    assert calls.rows == [1]
    assert answer.version == "v0001" and answer.candidates[0]


def test_versions_and_sampling_never_share_a_call(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    alone_v2 = manager.generate(PROMPTS[0], version="v0002")
    alone_base = manager.generate(PROMPTS[1], version="base")
    calls = GenerateCalls(monkeypatch)
    sampled = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=4)
    together = ask_together(
        manager,
        [
            {"prompt": PROMPTS[0], "version": "v0002"},
            {"prompt": PROMPTS[1], "version": "base"},
            {"prompt": PROMPTS[2]},
            {"prompt": PROMPTS[3], "sampling": sampled, "k": 2},
            {"prompt": PROMPTS[2], "version": "v0002"},
        ],
    )
    assert sorted(calls.rows) == [1, 1, 2, 2], "one call per version and sampling setting"
    assert [a.version for a in together] == ["v0002", "base", "v0001", "v0001", "v0002"]
    assert together[0].candidates == alone_v2.candidates
    assert together[1].candidates == alone_base.candidates
    assert len(together[3].candidates) == 2


def test_concurrent_streams_each_get_their_own_rows(manager: ModelManager) -> None:
    alone = [manager.generate(p) for p in PROMPTS[:3]]
    finals: list = [None] * 3
    seen: list[list[str]] = [[] for _ in range(3)]

    def read(i: int) -> None:
        for update in manager.stream(PROMPTS[i]):
            seen[i].append(update.text)
            if update.answer is not None:
                finals[i] = update.answer

    with manager._lock:
        threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for _ in range(500):
            if len(manager.pending) == 3:
                break
            threading.Event().wait(0.01)
    for t in threads:
        t.join(60)
    for i in range(3):
        assert finals[i] is not None
        assert finals[i].candidates == alone[i].candidates
        assert seen[i][-1] == alone[i].candidates[0]


def test_a_failed_batch_fails_every_request_in_it(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    import hitl_app.serving.fast_serving as fast_serving

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory while decoding")

    monkeypatch.setattr(fast_serving, "generate_answer", boom)
    results = ask_together(manager, [{"prompt": p} for p in PROMPTS[:3]])
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in results)
    assert len(manager.pending) == 0


def test_a_swap_between_batches_tags_each_answer_with_its_writer(manager: ModelManager) -> None:
    alone_v2 = [manager.generate(p, version="v0002") for p in PROMPTS[:2]]
    manager.registry.set_active("v0002", by="test", reason="swap")
    manager.sync()
    together = ask_together(manager, [{"prompt": p} for p in PROMPTS[:2]])
    assert [a.version for a in together] == ["v0002", "v0002"]
    assert [a.candidates for a in together] == [a.candidates for a in alone_v2]


def _request(version: str | None = None, sampling: Sampling | None = None) -> AnswerRequest:
    ids = torch.ones((1, 3), dtype=torch.long)
    return AnswerRequest({"input_ids": ids}, sampling or greedy(), 1, threading.Event(), version=version)


def test_pending_answers_takes_compatible_requests_in_order_up_to_the_limit() -> None:
    pending = PendingAnswers(max_batch=3)
    sampled = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=4)
    a, b, c, d, e = _request(), _request("v0002"), _request(sampling=sampled), _request("v0001"), _request()
    for r in (a, b, c, d, e):
        pending.add(r)
    batch = pending.take(a, serving="v0001")
    assert batch == [a, d, e] and all(r.version == "v0001" for r in batch)
    assert pending.take(a, serving="v0001") == [], "an answered request is not taken twice"
    assert pending.take(b, serving="v0001") == [b]
    assert pending.take(c, serving="v0001") == [c]
    assert len(pending) == 0
    with pytest.raises(ValueError, match="at least 1"):
        PendingAnswers(0)


def test_row_limits_stop_each_row_at_its_own_length_or_stop_button() -> None:
    stop = threading.Event()
    limits = RowLimits(prompt_len=4, limits=[2, 5, 5], stops=[threading.Event(), threading.Event(), stop])
    ids = torch.zeros((3, 6), dtype=torch.long)  # 2 new tokens so far
    assert limits(ids, None).tolist() == [True, False, False]
    stop.set()
    assert limits(ids, None).tolist() == [True, False, True]
