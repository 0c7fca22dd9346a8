"""ModelManager: hot-swapping LoRA versions, version tags, streaming, locking, input checks.

Every adapter here is built in the test from a seeded ``get_peft_model`` with
``init_lora_weights=False`` (random, non-zero B), so each version changes the logits. The
reference for a version is that adapter loaded on its own with ``PeftModel.from_pretrained`` on a
fresh copy of the base; the manager must reproduce it after any sequence of swaps.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.core.config import LORA_TARGETS
from hitl_app.core.errors import NotFoundError, UserError
from hitl_app.serving.manager import ModelManager
from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import BASE_VERSION, Sampling
from hitl_app.versions.manifest import Manifest, RoundMetrics

SYSTEM = "You are a careful medical assistant."
PROMPT = "What is the first-line treatment for hypertension?"
GREEDY = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=8)
ONE_TOKEN = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=1)

# version -> (seed, r, lora_alpha, target modules); the serving slot is r=4, alpha=8, all targets.
ADAPTERS = {
    "v0001": (1, 4, 8, LORA_TARGETS),
    "v0002": (2, 4, 8, LORA_TARGETS),
    "v0003": (3, 4, 16, LORA_TARGETS),  # same shapes, other scaling: hot-swap must update the scaling
    "v0004": (4, 4, 8, ["q_proj", "v_proj"]),  # fewer modules: hot-swap must zero the others
    "v0005": (5, 8, 16, LORA_TARGETS),  # other rank: loaded through the fallback path
}


def slot_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))


def fresh_base(tiny_base: Path):
    return load_base(tiny_base, LoadOptions(device="cpu"))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A checkpoints folder holding every adapter of ADAPTERS, published in order (no ACTIVE file)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("published")
    registry = Registry(root)
    for version, (seed, r, alpha, targets) in ADAPTERS.items():
        torch.manual_seed(seed)
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False)
        model = get_peft_model(fresh_base(tiny_base), config)
        staging = registry.staging_dir()
        model.save_pretrained(staging)
        manifest = Manifest(
            version="pending",
            parent=BASE_VERSION,
            base_model=str(tiny_base),
            record_ids=[],
            store_cursor=0,
            config={"lora_r": r},
            metrics=RoundMetrics(duration_s=0.0),
        )
        assert registry.publish(staging, manifest) == version
    return root


@pytest.fixture
def registry(published: Path, tmp_path: Path) -> Registry:
    """A private copy of the published versions, so tests may move ACTIVE."""
    return Registry(shutil.copytree(published, tmp_path / "checkpoints"))


@pytest.fixture
def manager(tiny_base: Path, registry: Registry):
    models = ModelManager.wrap(fresh_base(tiny_base), load_tokenizer(tiny_base), registry, GREEDY, SYSTEM, slot_config())
    yield models
    models.close()


@pytest.fixture(scope="module")
def reference(tiny_base: Path, published: Path):
    """Last-position logits of PROMPT for a version loaded on its own (cached per version)."""
    from peft import PeftModel

    tokenizer = load_tokenizer(tiny_base)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    cache: dict[str, torch.Tensor] = {}

    def logits(version: str) -> torch.Tensor:
        if version not in cache:
            model = fresh_base(tiny_base)
            if version != BASE_VERSION:
                model = PeftModel.from_pretrained(model, str(published / version))
            model.eval()
            with torch.no_grad():
                cache[version] = model(**inputs).logits[0, -1].clone()
        return cache[version]

    return logits


def served_logits(manager: ModelManager, version: str | None = None) -> torch.Tensor:
    """Last-position logits of PROMPT as the manager computes them while answering (lm_head hook)."""
    captured: list[torch.Tensor] = []
    lm_head = manager.model.get_base_model().lm_head
    handle = lm_head.register_forward_hook(lambda module, args, out: captured.append(out.detach().clone()))
    try:
        manager.generate(PROMPT, sampling=ONE_TOKEN, version=version)
    finally:
        handle.remove()
    assert captured, "generate() never reached the lm_head"
    return captured[0][0, -1]


@pytest.fixture
def swaps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts calls of peft's in-place hot-swap (the adapter slot imports it at swap time)."""
    import peft.utils.hotswap as hotswap

    calls: list[str] = []
    original = hotswap.hotswap_adapter_from_state_dict

    def spy(model, state_dict, adapter_name, config, **kwargs):
        calls.append(adapter_name)
        return original(model, state_dict, adapter_name, config=config, **kwargs)

    monkeypatch.setattr(hotswap, "hotswap_adapter_from_state_dict", spy)
    return calls


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# ----- hot-swap -----
def test_versions_change_the_logits(reference) -> None:
    """Precondition of the swap tests: every version and the base give different logits."""
    versions = [BASE_VERSION, *ADAPTERS]
    for i, a in enumerate(versions):
        for b in versions[i + 1 :]:
            assert not torch.allclose(reference(a), reference(b), atol=1e-3), (a, b)


def test_hot_swap_serves_each_adapter_exactly(manager: ModelManager, reference, swaps: list[str]) -> None:
    assert manager.version == BASE_VERSION
    assert_same(served_logits(manager), reference(BASE_VERSION))

    for step, version in enumerate(["v0001", "v0002", "v0001"], start=1):
        manager.activate(version)
        assert manager.version == version
        assert_same(served_logits(manager), reference(version))
        # the in-place path: one slot named "default", swapped by peft's hotswap, nothing reloaded
        assert swaps == ["default"] * step
        assert manager.slot.adapter == "default"
        assert list(manager.model.peft_config) == ["default"]

    manager.activate(BASE_VERSION)
    assert manager.version == BASE_VERSION
    assert_same(served_logits(manager), reference(BASE_VERSION))
    assert len(swaps) == 3  # serving base disables the adapter; it copies nothing


@pytest.mark.parametrize(
    ("version", "hot_swapped"),
    [
        ("v0003", True),  # other alpha: the scaling is swapped with the weights
        ("v0004", True),  # fewer target modules: the previous adapter's other modules are zeroed
        ("v0005", False),  # other rank: loaded beside the slot, the old slot deleted
    ],
)
def test_swap_from_a_loaded_adapter(
    manager: ModelManager, reference, swaps: list[str], version: str, hot_swapped: bool
) -> None:
    manager.activate("v0001")
    assert_same(served_logits(manager), reference("v0001"))
    swaps.clear()

    manager.activate(version)
    assert manager.version == version
    assert_same(served_logits(manager), reference(version))
    if hot_swapped:
        assert swaps == ["default"]
        assert manager.slot.adapter == "default"
    else:
        assert swaps == []
        assert manager.slot.adapter != "default"
    assert list(manager.model.peft_config) == [manager.slot.adapter]  # never two adapters left loaded

    # and back again: the first adapter is served exactly, whatever the slot now holds
    manager.activate("v0001")
    assert_same(served_logits(manager), reference("v0001"))
    manager.activate(BASE_VERSION)
    assert_same(served_logits(manager), reference(BASE_VERSION))


def test_another_version_answers_without_changing_the_serving_one(manager: ModelManager, reference) -> None:
    """A/B comparisons: any published version (or base) answers one call; serving stays exact."""
    manager.activate("v0001")
    for version in ["v0002", BASE_VERSION, "v0005", "v0003", "v0004", "v0002"]:  # v0005: another rank
        assert_same(served_logits(manager, version), reference(version))
        assert manager.generate(PROMPT, sampling=GREEDY, version=version).version == version
        assert manager.version == "v0001"
        assert_same(served_logits(manager), reference("v0001"))
    extra = [name for name in manager.model.peft_config if name != manager.slot.adapter]
    assert len(extra) <= 4  # comparison adapters are bounded
    with pytest.raises(NotFoundError):
        manager.generate(PROMPT, sampling=GREEDY, version="v0099")
    assert_same(served_logits(manager), reference("v0001"))


def test_activate_unknown_version_keeps_serving(manager: ModelManager, reference) -> None:
    from hitl_app.core.errors import NotFoundError

    manager.activate("v0002")
    with pytest.raises(NotFoundError, match="v0099"):
        manager.activate("v0099")
    assert manager.version == "v0002"
    assert_same(served_logits(manager), reference("v0002"))


# ----- version tags -----
def test_answers_carry_the_serving_version(manager: ModelManager, registry: Registry) -> None:
    assert manager.generate(PROMPT).version == BASE_VERSION
    assert manager.sync() is False  # ACTIVE still names base

    registry.set_active("v0001", by="test")
    assert manager.generate(PROMPT).version == BASE_VERSION  # not followed until sync (or watch)
    assert manager.sync() is True
    assert manager.generate(PROMPT).version == "v0001"

    registry.set_active("v0002", by="test")
    manager.sync()
    answer = manager.generate(PROMPT)
    assert answer.version == "v0002"
    assert answer.sampling == GREEDY
    assert answer.prompt_tokens == manager.encode(PROMPT)["input_ids"].shape[1]
    assert 0 < answer.new_tokens <= GREEDY.max_new_tokens


def test_wrap_serves_the_persisted_active_version(tiny_base: Path, registry: Registry, reference) -> None:
    registry.set_active("v0002", by="test")
    models = ModelManager.wrap(fresh_base(tiny_base), load_tokenizer(tiny_base), registry, GREEDY, SYSTEM, slot_config())
    try:
        assert models.version == "v0002"
        assert_same(served_logits(models), reference("v0002"))
    finally:
        models.close()


def test_greedy_answers_differ_between_versions(manager: ModelManager) -> None:
    """Precondition of the stream and locking tests: v0001 and v0002 write different greedy answers."""
    manager.activate("v0001")
    first = manager.generate(PROMPT).candidates[0]
    manager.activate("v0002")
    second = manager.generate(PROMPT).candidates[0]
    assert first and second and first != second


# ----- streaming -----
def test_stream_grows_and_ends_with_the_answer(manager: ModelManager) -> None:
    manager.activate("v0001")
    updates = list(manager.stream(PROMPT, sampling=GREEDY))

    *partial, final = updates
    assert all(u.answer is None for u in partial)
    assert final.answer is not None
    texts = [u.text for u in partial]
    assert len({t for t in texts if t}) >= 2, f"the text did not grow: {texts}"
    for before, after in zip(texts, texts[1:]):
        assert after.startswith(before)
    # the final update replaces the streamed text by the finished (stripped) answer
    assert final.text == final.answer.candidates[0] == texts[-1].strip()
    assert final.version == final.answer.version == "v0001"
    assert all(u.version == "v0001" for u in partial)

    # streaming and a plain call decode the same way
    answer = manager.generate(PROMPT, sampling=GREEDY)
    assert answer.candidates == final.answer.candidates
    assert answer.new_tokens == final.answer.new_tokens


def test_stream_stops_generation_when_the_reader_leaves(manager: ModelManager) -> None:
    manager.activate("v0001")
    forwards: list[int] = []
    layer = manager.model.get_base_model().model.layers[0]
    handle = layer.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        stream = manager.stream(PROMPT, sampling=Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=400))
        next(stream)
        stream.close()  # the reader goes away after one update
        stopped_at = len(forwards)
    finally:
        handle.remove()
    assert stopped_at < 50, f"generation ran on for {stopped_at} tokens after the reader left"
    # and the lock was released: the next answer is produced
    assert manager.generate(PROMPT).version == "v0001"


# ----- no torn answers -----
def test_swap_waits_for_the_answer_in_progress(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    manager.activate("v0002")
    answer_v2 = manager.generate(PROMPT).candidates[0]
    manager.activate("v0001")
    answer_v1 = manager.generate(PROMPT).candidates[0]
    assert answer_v1 != answer_v2

    # Slow every forward pass down, so the swap is requested while the answer is being written,
    # and read the stream slowly, so the reader lags behind generation.
    forwards: list[float] = []

    def slow(module, args):
        forwards.append(time.perf_counter())
        time.sleep(0.05)

    layer = manager.model.get_base_model().model.layers[0]
    handle = layer.register_forward_pre_hook(slow)
    swap: dict[str, float] = {}

    def activate_v2() -> None:
        swap["requested"] = time.perf_counter()
        manager.activate("v0002")
        swap["done"] = time.perf_counter()

    swapper = threading.Thread(target=activate_v2)
    updates = []
    try:
        for update in manager.stream(PROMPT, sampling=GREEDY):
            updates.append(update)
            if len(updates) == 1:
                swapper.start()
            time.sleep(0.06)
    finally:
        handle.remove()
        if swapper.ident is not None:  # started
            swapper.join(timeout=30)

    final = updates[-1].answer
    assert final is not None
    assert len(forwards) == GREEDY.max_new_tokens  # one forward pass per new token
    # the swap was asked for in the middle of the answer, and done only after its last token
    assert swap["requested"] < forwards[-1] < swap["done"]
    assert final.version == "v0001"
    assert final.candidates[0] == answer_v1
    # every update of the answer is labelled with the version that wrote it, even those read after the swap
    assert [u.version for u in updates] == ["v0001"] * len(updates)
    # the swap did happen
    assert manager.version == "v0002"
    after = manager.generate(PROMPT)
    assert (after.version, after.candidates[0]) == ("v0002", answer_v2)


# ----- several candidates -----
def test_k_candidates_in_one_call(manager: ModelManager) -> None:
    manager.activate("v0001")
    sampling = Sampling(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=8)
    torch.manual_seed(0)
    answer = manager.generate(PROMPT, k=3, sampling=sampling)
    assert len(answer.candidates) == 3
    assert all(isinstance(c, str) for c in answer.candidates)
    assert len(set(answer.candidates)) > 1  # sampled independently, not one answer repeated
    assert answer.version == "v0001"
    assert answer.sampling == sampling
    assert answer.new_tokens > GREEDY.max_new_tokens  # tokens of all three candidates are counted


SAMPLED = Sampling(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=8)


def _count_generate_calls(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    real = manager.model.generate

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(manager.model, "generate", counting)
    return calls


@pytest.mark.parametrize("k", [1, 2, 4])
def test_streamed_candidates_come_from_one_batched_call(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    manager.activate("v0002")
    calls = _count_generate_calls(manager, monkeypatch)
    torch.manual_seed(1)
    *partial, final = list(manager.stream(PROMPT, k=k, sampling=SAMPLED))
    assert len(calls) == 1 and calls[0]["num_return_sequences"] == k
    assert calls[0]["input_ids"].shape[0] == 1  # one prompt, expanded to k rows inside generate
    assert partial and all(len(u.texts) == k and u.answer is None for u in partial)
    assert all(u.version == "v0002" for u in [*partial, final])
    assert final.answer is not None and final.texts == final.answer.candidates and len(final.texts) == k
    # every candidate's stream grows by appending and ends at its finished answer
    for i in range(k):
        texts = [u.texts[i] for u in partial]
        for before, after in zip(texts, texts[1:]):
            assert after.startswith(before)
        # (a random tiny model emits broken bytes, which decode to U+FFFD and are held back at the end)
        assert final.answer.candidates[i].replace("\ufffd", "").strip() == texts[-1].replace("\ufffd", "").strip()
    if k > 1:
        assert len(set(final.answer.candidates)) > 1


def test_candidate_streamer_keeps_up_with_a_slow_reader(tiny_base: Path) -> None:
    from hitl_app.serving.generation import CandidateStreamer

    tokenizer = load_tokenizer(tiny_base)
    words = [tokenizer.encode(w, add_special_tokens=False) for w in ("Asthma", " is", " treated")]
    streamer = CandidateStreamer(tokenizer, k=2)
    streamer.put(torch.zeros((2, 5), dtype=torch.long))  # the prompt is not part of the answer
    for step in range(len(words)):
        for t in words[step]:
            streamer.put(torch.tensor([t, tokenizer.pad_token_id]))
    streamer.end()
    snapshots = list(streamer)
    # the reader came late: it gets only the newest snapshot, not every step
    assert snapshots == [["Asthma is treated", ""]]


def test_candidate_streamer_holds_back_a_split_character(tiny_base: Path) -> None:
    from hitl_app.serving.generation import CandidateStreamer

    tokenizer = load_tokenizer(tiny_base)
    ids = tokenizer.encode("é", add_special_tokens=False)
    byte_tokens = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    if len(byte_tokens) < 2:
        pytest.skip("the tiny tokenizer has 'é' as one token")
    streamer = CandidateStreamer(tokenizer, k=1)
    streamer.put(torch.zeros((1, 3), dtype=torch.long))
    streamer.put(torch.tensor([byte_tokens[0]]))
    assert next(iter(streamer)) == [""]  # half a character is not shown as U+FFFD
    for t in byte_tokens[1:]:
        streamer.put(torch.tensor([t]))
    streamer.end()
    assert list(streamer) == [["é"]]


def test_threads_policy_sets_threads_for_each_answer(manager: ModelManager) -> None:
    before = torch.get_num_threads()
    try:
        manager.threads_policy = lambda: 1
        manager.generate(PROMPT, sampling=GREEDY)
        assert torch.get_num_threads() == 1
    finally:
        manager.threads_policy = None
        torch.set_num_threads(before)


# ----- input checks -----
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("\n\t ", "empty"),
        ("paracetamol " * 600, "tokens"),  # longer than the 512-token context
    ],
)
def test_encode_rejects(manager: ModelManager, prompt: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        manager.encode(prompt)
    with pytest.raises(UserError, match=message):
        manager.generate(prompt)
    with pytest.raises(UserError, match=message):
        list(manager.stream(prompt))


def test_encode_limit_leaves_room_for_the_answer(manager: ModelManager) -> None:
    assert manager.context_length == 512
    n = manager.encode(PROMPT)["input_ids"].shape[1]
    fits = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=512 - n)
    too_long = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=512 - n + 1)
    assert manager.encode(PROMPT, fits)["input_ids"].shape[1] == n
    with pytest.raises(UserError, match=f"{n} tokens"):
        manager.encode(PROMPT, too_long)


# ----- following ACTIVE -----
def test_watch_follows_active_until_closed(manager: ModelManager, registry: Registry) -> None:
    manager.watch(interval_s=0.02)
    registry.set_active("v0001", by="test")
    deadline = time.monotonic() + 2
    while manager.version != "v0001" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.version == "v0001"
    assert manager.generate(PROMPT).version == "v0001"

    manager.close()
    assert manager._watcher.thread is not None and not manager._watcher.thread.is_alive()
    registry.set_active("v0002", by="test")
    time.sleep(0.2)
    assert manager.version == "v0001"
