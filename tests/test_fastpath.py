"""The fast decode path (hitl_app.serving.fastpath): a merged serving copy that answers as the PEFT model does.

The fast tests run on the tiny in-memory Llama. A float32 copy must reproduce the PEFT model's
greedy answers exactly for every version (merging is exact up to float rounding), through hot
swaps, compare answers of other versions and the base; a bf16 copy must stay close. The slow test
runs the real embedded model in bf16 against plain fp32 ``generate`` on 20 shipped questions.
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import pytest
import torch

from hitl_app.serving import fastpath
from hitl_app.serving.base_model import LoadOptions, load_base, load_tokenizer
from hitl_app.core.config import LORA_TARGETS
from hitl_app.serving.fastpath import MergedServingCopy, resolve_serve_dtype
from hitl_app.serving.manager import ModelManager
from hitl_app.versions.registry import Registry
from hitl_app.feedback.records import BASE_VERSION, Sampling
from hitl_app.versions.manifest import Manifest, RoundMetrics

SYSTEM = "You are a careful medical assistant."
GREEDY = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=10)
SAMPLED = Sampling(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=8)
PROMPTS = [
    f"{q} ({i})"
    for i, q in enumerate(
        [
            "What is the first-line treatment for hypertension?",
            "How is asthma treated?",
            "What are the signs of a stroke?",
            "What is the maximum daily dose of paracetamol?",
            "When does chest pain need urgent care?",
        ]
        * 4
    )
]  # 20 prompts
# version -> (seed, r, lora_alpha); all on every projection, as the app's slot (r=4, alpha=8).
ADAPTERS = {"v0001": (1, 4, 8), "v0002": (2, 4, 8), "v0003": (3, 4, 16)}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """A checkpoints folder with the random (non-zero B) adapters of ADAPTERS published in order."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("fast-published")
    registry = Registry(root)
    for version, (seed, r, alpha) in ADAPTERS.items():
        torch.manual_seed(seed)
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), init_lora_weights=False)
        model = get_peft_model(load_base(tiny_base, LoadOptions()), config)
        staging = registry.staging_dir()
        model.save_pretrained(staging)
        manifest = Manifest(
            version="pending", parent=BASE_VERSION, base_model=str(tiny_base), record_ids=[], store_cursor=0,
            config={"lora_r": r}, metrics=RoundMetrics(duration_s=0.0),
        )
        assert registry.publish(staging, manifest) == version
    return root


def make_manager(tiny_base: Path, root: Path, dtype: torch.dtype | None) -> ModelManager:
    from peft import LoraConfig

    registry = Registry(root)
    slot = LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
    return ModelManager.wrap(
        load_base(tiny_base, LoadOptions()), load_tokenizer(tiny_base), registry, GREEDY, SYSTEM, slot, dtype
    )


@pytest.fixture(params=[torch.float32], ids=["fp32-copy"])
def manager(request, tiny_base: Path, published: Path, tmp_path: Path):
    """A manager with a float32 merged copy (exact), on a private copy of the published versions."""
    import shutil

    models = make_manager(tiny_base, shutil.copytree(published, tmp_path / "checkpoints"), request.param)
    yield models
    models.close()


def answers(models: ModelManager, fast: bool, version: str | None = None, prompts=PROMPTS) -> list[str]:
    """Greedy answers with the merged copy switched in or out (the PEFT model answers without it)."""
    copy = models.fast
    if not fast:
        models.fast = None
    try:
        return [models.generate(p, version=version).candidates[0] for p in prompts]
    finally:
        models.fast = copy


class CallCounter:
    """Counts calls of the copy's generate (to show the fast path answered)."""

    def __init__(self, copy: MergedServingCopy) -> None:
        self.calls = 0
        original = copy.generate

        def generate(**kwargs):
            self.calls += 1
            return original(**kwargs)

        copy.generate = generate  # type: ignore[method-assign]


# ----- the setting -----
@pytest.mark.parametrize(
    ("setting", "device", "four_bit", "native_bf16", "expected"),
    [
        ("auto", "cpu", False, True, torch.bfloat16),
        ("auto", "cpu", False, False, None),  # emulated bf16 is slower than fp32
        ("auto", "cuda", False, True, None),  # CUDA serves bf16 already: unchanged
        ("auto", "cpu", True, True, None),  # 4-bit unchanged
        ("float32", "cpu", False, True, None),
        ("bfloat16", "cpu", False, False, torch.bfloat16),  # asked for explicitly: honoured
    ],
)
def test_resolve_serve_dtype(
    monkeypatch: pytest.MonkeyPatch, setting: str, device: str, four_bit: bool, native_bf16: bool, expected
) -> None:
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: native_bf16)
    assert resolve_serve_dtype(setting, device, four_bit) == expected


def test_float32_setting_serves_from_the_peft_model(tiny_base: Path, published: Path) -> None:
    models = make_manager(tiny_base, published, resolve_serve_dtype("float32", "cpu", False))
    assert models.fast is None
    assert models.generate(PROMPTS[0]).candidates


# ----- exactness of the merged copy -----
def test_fp32_copy_answers_as_the_peft_model_for_every_version(manager: ModelManager) -> None:
    counter = CallCounter(manager.fast)
    for version in [BASE_VERSION, "v0001", "v0002", "v0003", "v0001"]:  # hot swaps, incl. another scaling
        manager.activate(version)
        plain = answers(manager, fast=False)
        fast = answers(manager, fast=True)
        assert fast == plain, version
        assert manager.fast.holds == version
    assert counter.calls == 5 * len(PROMPTS)
    # the versions really differ, so agreement is not vacuous
    manager.activate("v0001")
    assert answers(manager, fast=True, version=BASE_VERSION) != answers(manager, fast=True)


def test_compare_answers_and_base_use_their_own_weights(manager: ModelManager) -> None:
    manager.activate("v0002")
    prompts = PROMPTS[:5]
    serving = answers(manager, fast=False, prompts=prompts)
    for version in ["v0001", BASE_VERSION, "v0003"]:
        expected = answers(manager, fast=False, version=version, prompts=prompts)
        assert answers(manager, fast=True, version=version, prompts=prompts) == expected, version
        assert manager.version == "v0002"
        # the next serving answer re-merges the serving version
        assert answers(manager, fast=True, prompts=prompts) == serving
        assert manager.fast.holds == "v0002"


def test_streaming_and_batched_candidates_go_through_the_copy(manager: ModelManager) -> None:
    manager.activate("v0001")
    counter = CallCounter(manager.fast)
    updates = list(manager.stream(PROMPTS[0], k=3, sampling=SAMPLED))
    final = updates[-1].answer
    assert final is not None and final.version == "v0001"
    assert len(final.candidates) == 3 and len(updates[-1].texts) == 3
    assert len(updates) >= 2  # text arrived before the end
    assert counter.calls == 1  # one batched call for the three candidates
    # greedy streaming equals the PEFT model's answer
    streamed = list(manager.stream(PROMPTS[1]))[-1].answer
    assert streamed.candidates == answers(manager, fast=False, prompts=[PROMPTS[1]])


def test_stream_stops_and_releases_the_lock_when_the_reader_leaves(manager: ModelManager) -> None:
    long = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=400)
    stream = manager.stream(PROMPTS[0], sampling=long)
    next(stream)
    stream.close()  # the reader goes away: the stop event ends generation, then the lock is free
    assert manager._lock.acquire(timeout=10)
    manager._lock.release()


def test_answers_are_tagged_with_the_version_whose_weights_wrote_them(manager: ModelManager) -> None:
    """A swap waits for the answer in progress; each answer equals its version's own answer."""
    expected = {}
    for version in ["v0001", "v0002"]:
        manager.activate(version)
        expected[version] = answers(manager, fast=False, prompts=[PROMPTS[2]])[0]
    assert expected["v0001"] != expected["v0002"]
    manager.activate("v0001")
    results = []

    def ask() -> None:
        for _ in range(6):
            results.append(manager.generate(PROMPTS[2]))

    worker = threading.Thread(target=ask)
    worker.start()
    for version in ["v0002", "v0001", "v0002"]:
        manager.activate(version)
    worker.join()
    for answer in results:
        assert answer.candidates[0] == expected[answer.version]


def test_unsupported_adapter_falls_back_to_the_peft_model(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager.activate("v0001")
    checks = []

    def refuse(peft_model) -> None:
        checks.append(peft_model)
        raise fastpath.FastPathUnsupported("adapter default trains modules_to_save")

    monkeypatch.setattr(fastpath, "_check_adapters", refuse)
    monkeypatch.setattr(manager.fast, "refused", {})
    monkeypatch.setattr(manager.fast, "holds", None)
    counter = CallCounter(manager.fast)
    with caplog.at_level("WARNING", logger="hitl_app.serving.fastpath"):
        assert answers(manager, fast=True, prompts=PROMPTS[:3]) == answers(manager, fast=False, prompts=PROMPTS[:3])
    assert counter.calls == 0
    # Refused once: later answers neither retry the merge nor warn again, and /status says why.
    assert len(checks) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "fast path: v0001 is answered on the PEFT model instead: adapter default trains modules_to_save"
    ]
    assert manager.fast.describe().refused == {"v0001": "adapter default trains modules_to_save"}
    assert manager.fast.holds is None


# ----- bf16 and the kernel choice -----
def test_bf16_copy_stays_close_to_fp32(tiny_base: Path, published: Path) -> None:
    models = make_manager(tiny_base, published, torch.bfloat16)
    models.activate("v0001")
    inputs = models.encode(PROMPTS[0])
    with torch.inference_mode():
        with models.slot.weights_for("v0001"):
            models.fast.prepare(models.model, "v0001")
            fp32 = models.model(**inputs).logits[0, -1]
        bf16 = models.fast.model(**inputs).logits[0, -1].float()
        with models.slot.weights_for(BASE_VERSION):
            base = models.model(**inputs).logits[0, -1]
    effect = (fp32 - base).abs().max()
    assert (bf16 - fp32).abs().max() < 0.1 * effect  # bf16 rounding is far below the adapter's effect
    assert models.generate(PROMPTS[0]).version == "v0001"


class _Probe(torch.nn.Module):
    """Records whether oneDNN was enabled when each forward ran."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.backends.mkldnn.enabled)
        return input_ids


def test_forwards_over_one_or_two_rows_skip_onednn_in_serving_threads_only() -> None:
    probe = _Probe()
    switch = fastpath.FewRowsGemv()
    switch.attach(probe)
    before = torch.backends.mkldnn.enabled
    probe(input_ids=torch.zeros(1, 1))  # outside serving(): the switch is left alone
    with switch.serving():
        probe(input_ids=torch.zeros(1, 1))  # a batch-1 decode step
        probe(input_ids=torch.zeros(2, 1))  # a decode step of 2 candidates
        probe(input_ids=torch.zeros(1, 12))  # a prefill
        probe(input_ids=torch.zeros(3, 1))  # a decode step of 3 candidates
        other = threading.Thread(target=lambda: probe(input_ids=torch.zeros(1, 1)))  # e.g. a compile warm-up
        other.start()
        other.join()
    assert probe.seen == [before, False, False, before, before, before]
    assert torch.backends.mkldnn.enabled == before


# ----- the real model -----
@pytest.mark.slow
def test_fast_path_quality_on_the_embedded_model(embedded_base: Path, tmp_path: Path) -> None:
    """bf16 fast path (compiled) vs plain fp32 generate, greedy, 20 shipped questions, 32 new tokens.

    Reports the share of identical answers, the mean shared-prefix fraction (tokens) and the mean
    per-token log-prob, under the fp32 model, of the fast answers minus the plain ones. Plain
    greedy follows the fp32 argmax, so the difference is <= 0-ish; bf16 near-ties make the paths
    part after a while, to another fluent continuation (log-prob close to the argmax path's).
    """
    from peft import LoraConfig

    from hitl_app.bench.decode import shared_prefix_fraction
    from hitl_app.evaluation.evalsets import load_eval_questions
    from hitl_app.evaluation.logprobs import completion_logprob
    from tests.test_compiled_decode import CompiledCalls

    sampling = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=32)
    tokenizer = load_tokenizer(embedded_base)
    slot = LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS))
    models = ModelManager.wrap(
        load_base(embedded_base, LoadOptions()), tokenizer, Registry(tmp_path / "ck"), sampling, SYSTEM, slot,
        torch.bfloat16,
    )
    # The fast path as served: compiled decoding, with the cache a 32-token answer gets by default.
    assert models.start_compiled_decoding((256,)) and models.fast.compiled.wait(timeout_s=900)
    compiled = CompiledCalls(models.fast.compiled)
    questions = [q.question for q in load_eval_questions()][:20]
    assert len(questions) == 20
    plain: list = []
    fast: list = []
    copy = models.fast
    for q in questions:
        models.fast = None
        plain.append(models.generate(q, sampling=sampling))
        models.fast = copy
        fast.append(models.generate(q, sampling=sampling))
    assert compiled.calls == len(questions)

    def mean_logprob(question: str, answer: str) -> float:
        """Mean per-token log-prob of ``answer`` as the reply to ``question``, under the fp32 base."""
        with torch.inference_mode(), models.model.disable_adapter():
            return completion_logprob(models.model, tokenizer, models.messages(question), answer)

    identical = sum(p.candidates == f.candidates for p, f in zip(plain, fast)) / len(questions)
    prefixes = [
        shared_prefix_fraction(
            tokenizer(p.candidates[0], add_special_tokens=False)["input_ids"],
            tokenizer(f.candidates[0], add_special_tokens=False)["input_ids"],
        )
        for p, f in zip(plain, fast)
    ]
    diffs = [
        mean_logprob(q, f.candidates[0]) - mean_logprob(q, p.candidates[0])
        for q, p, f in zip(questions, plain, fast)
        if p.candidates[0] and f.candidates[0]
    ]
    speed_plain = statistics.median(a.new_tokens / a.seconds for a in plain)
    speed_fast = statistics.median(a.new_tokens / a.seconds for a in fast)
    print(
        f"\nfast path vs plain fp32 on {len(questions)} questions: identical {identical:.0%}, "
        f"mean shared prefix {statistics.mean(prefixes):.0%}, mean log-prob diff {statistics.mean(diffs):+.3f} "
        f"nats/token, median tok/s plain {speed_plain:.1f} fast {speed_fast:.1f}"
    )
    assert all(a.version == BASE_VERSION for a in plain + fast)
    assert statistics.mean(prefixes) >= PREFIX_MIN
    assert abs(statistics.mean(diffs)) <= LOGPROB_DIFF_MAX


# Bounds of the slow test. Measured (torch 2.13 CPU, AVX512-BF16): 70 % identical, mean shared
# prefix 82 %, mean log-prob diff -0.016 nats/token. The bounds leave room for other CPUs' near-ties;
# wrong weights (a bad merge, a stale version) part on the first tokens and cost nats per token.
PREFIX_MIN = 0.6
LOGPROB_DIFF_MAX = 0.1
