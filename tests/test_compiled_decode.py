"""Compiled decoding (hitl_app.serving.compiled_decode) on the tiny in-memory Llama.

A float32 serving copy is compiled once per module (the warm-up takes ~10 s per shape here), so
its answers can be compared exactly with the PEFT model's: through hot swaps, answers of other
versions, the base, streaming, sampled candidates and thread-count changes, with no
recompilation after the warm-up.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from hitl_app.serving.compiled_decode import CompiledDecoder, default_buckets
from hitl_app.serving.manager import ModelManager
from hitl_app.feedback.records import BASE_VERSION, Sampling
from tests.helpers import wait_for
from tests.test_fastpath import PROMPTS, SAMPLED, answers, make_manager, published  # noqa: F401 (a fixture)

BUCKET = 128  # holds the tiny tokenizer's prompts (under 100 tokens) and 10 new tokens
ROWS = 3  # candidates sampled together, besides single answers


class CompiledCalls:
    """Counts answers decoded through the compiled path."""

    def __init__(self, decoder: CompiledDecoder) -> None:
        self.calls = 0
        original = decoder.generate

        def generate(shape: tuple[int, int], **kwargs):
            self.calls += 1
            return original(shape, **kwargs)

        decoder.generate = generate  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def compiled(tiny_base: Path, published: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelManager:  # noqa: F811
    """A manager whose float32 copy has compiled 128-token caches for 1 and 3 rows, warmed up."""
    root = shutil.copytree(published, tmp_path_factory.mktemp("compiled") / "checkpoints")
    models = make_manager(tiny_base, root, torch.float32)
    assert models.start_compiled_decoding((BUCKET,), rows=(1, ROWS))
    assert models.fast.compiled.wait(timeout_s=600), models.fast.compiled.describe()
    yield models
    models.close()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize(
    ("max_new_tokens", "context", "expected"),
    [
        (256, 8192, (512, 1024, 2048)),  # the default answer length
        (64, 8192, (256, 512, 1024, 2048)),
        (8, 512, (256, 512)),  # capped by a small context
        (1024, 8192, (2048,)),
        (2000, 8192, ()),  # nothing holds it: uncompiled
    ],
)
def test_default_buckets(max_new_tokens: int, context: int, expected: tuple) -> None:
    assert default_buckets(max_new_tokens, context) == expected


def test_twin_shares_weights_and_hooks_but_not_its_config(compiled: ModelManager) -> None:
    copy, twin = compiled.fast.model, compiled.fast.compiled.twin
    for (name, a), (_, b) in zip(copy.named_parameters(), twin.named_parameters(), strict=True):
        assert a is b, name
    # the twin runs the copy's own hooks (the GEMV switch), wrapped to run eagerly around the graph
    assert [h.__wrapped__ for h in twin._forward_pre_hooks.values()] == list(copy._forward_pre_hooks.values())
    assert twin.config._attn_implementation == "eager" and twin.config is not copy.config


def test_compiled_answers_equal_the_peft_models_for_every_version(compiled: ModelManager) -> None:
    counter = CompiledCalls(compiled.fast.compiled)
    before = graphs()
    prompts = PROMPTS[:8]
    for version in [BASE_VERSION, "v0001", "v0002", "v0003", "v0001"]:  # hot swaps, incl. another scaling
        compiled.activate(version)
        assert answers(compiled, fast=True, prompts=prompts) == answers(compiled, fast=False, prompts=prompts), version
    # answers of another version than the serving one (A/B) and of the base
    for version in ["v0002", BASE_VERSION]:
        expected = answers(compiled, fast=False, version=version, prompts=prompts)
        assert answers(compiled, fast=True, version=version, prompts=prompts) == expected, version
    assert counter.calls == 7 * len(prompts)
    assert any(answers(compiled, fast=True, prompts=prompts))  # not vacuous: the adapters write text
    assert graphs() == before  # no answer recompiled


def test_a_thread_count_change_does_not_recompile(compiled: ModelManager) -> None:
    compiled.activate("v0001")
    counter = CompiledCalls(compiled.fast.compiled)
    before, threads = graphs(), torch.get_num_threads()
    expected = answers(compiled, fast=False, prompts=PROMPTS[:2])
    try:
        for n in {1, max(2, threads)}:
            compiled.threads_policy = lambda n=n: n  # as while the trainer runs, and after
            assert answers(compiled, fast=True, prompts=PROMPTS[:2]) == expected
    finally:
        compiled.threads_policy = None
        torch.set_num_threads(threads)
    assert counter.calls == 4 and graphs() == before


def test_streaming_goes_through_the_compiled_path(compiled: ModelManager) -> None:
    compiled.activate("v0002")
    counter = CompiledCalls(compiled.fast.compiled)
    updates = list(compiled.stream(PROMPTS[1]))
    assert len(updates) >= 2 and updates[-1].answer.version == "v0002"
    assert updates[-1].answer.candidates == answers(compiled, fast=False, prompts=[PROMPTS[1]])
    assert counter.calls == 1


def test_compiled_candidates_sample_as_the_uncompiled_ones(compiled: ModelManager) -> None:
    compiled.activate("v0001")
    counter = CompiledCalls(compiled.fast.compiled)
    sampled = {}
    for path in ("compiled", "uncompiled"):
        decoder = compiled.fast.compiled
        compiled.fast.compiled = decoder if path == "compiled" else None
        try:
            torch.manual_seed(7)
            final = list(compiled.stream(PROMPTS[0], k=ROWS, sampling=SAMPLED))[-1].answer
        finally:
            compiled.fast.compiled = decoder
        sampled[path] = final.candidates
    assert len(sampled["compiled"]) == ROWS and len(set(sampled["compiled"])) > 1  # sampled, not one answer copied
    assert sampled["compiled"] == sampled["uncompiled"]  # same draws from (float32-)equal distributions
    assert counter.calls == 1


def test_other_shapes_decode_uncompiled(compiled: ModelManager) -> None:
    compiled.activate("v0001")
    counter = CompiledCalls(compiled.fast.compiled)
    assert len(compiled.generate(PROMPTS[0], k=2, sampling=SAMPLED).candidates) == 2  # 2 rows: not compiled
    long = Sampling(do_sample=False, temperature=0, top_p=1, max_new_tokens=BUCKET)
    assert compiled.generate(PROMPTS[0], sampling=long).version == "v0001"  # does not fit the cache
    assert counter.calls == 0
    kwargs = compiled._generate_kwargs(compiled.encode(PROMPTS[0]), compiled.sampling, 1, threading.Event())
    decoder = compiled.fast.compiled
    assert decoder.shape_for(kwargs) == (BUCKET, 1)
    assert decoder.shape_for({**kwargs, "num_return_sequences": ROWS}) == (BUCKET, ROWS)
    assert decoder.shape_for({**kwargs, "num_return_sequences": 2}) is None
    assert decoder.shape_for({**kwargs, "max_new_tokens": BUCKET}) is None


def test_a_failed_warm_up_leaves_the_uncompiled_copy_answering(
    tiny_base: Path, published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    models = make_manager(tiny_base, shutil.copytree(published, tmp_path / "checkpoints"), torch.float32)

    def no_compiler(self, bucket: int, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(CompiledDecoder, "generate", no_compiler)
    assert models.start_compiled_decoding((BUCKET,))
    assert not models.fast.compiled.wait(timeout_s=60)
    state = models.fast.describe().compiled
    assert state.ready == [] and state.error == "RuntimeError: no C++ compiler"
    models.activate("v0001")
    assert answers(models, fast=True, prompts=PROMPTS[:2]) == answers(models, fast=False, prompts=PROMPTS[:2])
    models.close()


def test_warm_up_needs_a_single_row_example(compiled: ModelManager) -> None:
    decoder = CompiledDecoder(compiled.fast.model, (BUCKET,))
    kwargs = compiled._generate_kwargs(compiled.encode(PROMPTS[0]), compiled.sampling, 1, threading.Event())
    kwargs["input_ids"] = kwargs["input_ids"].repeat(2, 1)
    decoder.start(kwargs)
    assert not decoder.wait(timeout_s=60)
    assert decoder.error == "ValueError: the warm-up example must be a single prompt"
    with pytest.raises(ValueError, match="at least 2 tokens"):
        CompiledDecoder(compiled.fast.model, ())
    with pytest.raises(ValueError, match="row counts of at least 1"):
        CompiledDecoder(compiled.fast.model, (BUCKET,), rows=(0,))
    with pytest.raises(RuntimeError, match="started already"):
        decoder.start(kwargs)


def test_the_app_compiles_in_the_background_and_status_shows_it(make_settings) -> None:
    from hitl_app.app import create_service
    from hitl_app.service.service import Caller
    from hitl_app.ui.format import decoding_line

    settings = make_settings(compile_decode=True, serve_dtype="bfloat16", auto_retrain=False)
    service = create_service(settings)
    try:
        assert service.status().fast_path.compiled.buckets == [256, 512]  # 8-token answers, 512 context
        answer = service.ask(PROMPTS[0], Caller("dr-test", "clinician"))  # answered while compiling
        assert answer.version == BASE_VERSION
        # Only the shape in use (the first cache length, the default candidates) is compiled, in a
        # low-priority child process first, then loaded here; the longer cache waits until asked for.
        def settled():
            state = service.status().fast_path.compiled
            return state if state.ready == [[256, 1]] or state.error else None

        state = wait_for(settled, 600)
        assert state.error is None and state.compiling is None and state.waiting == []
        assert set(state.compile_s) == {"256x1"}
        counter = CompiledCalls(service.models.fast.compiled)
        service.ask(PROMPTS[1], Caller("dr-test", "clinician"))
        assert counter.calls == 1
        assert decoding_line(service.status().fast_path) == (
            "**Decoding:** bfloat16 merged copy, compiled for 256 tokens x 1 (cache x answers)"
        )
    finally:
        service.models.close()
        service.trainer.stop()


def test_no_compiled_decoding_without_a_fast_copy(tiny_base: Path, published: Path) -> None:  # noqa: F811
    models = make_manager(tiny_base, published, None)
    assert models.fast is None and not models.start_compiled_decoding()


@pytest.mark.parametrize(
    ("fast", "expected"),
    [
        (None, "**Decoding:** the float32 PEFT model"),
        ({"dtype": "bfloat16", "compiled": None}, "**Decoding:** bfloat16 merged copy, uncompiled"),
        (
            {"dtype": "bfloat16", "compiled": {"ready": [], "compiling": [512, 1], "error": None}},
            "**Decoding:** bfloat16 merged copy, uncompiled until compiling is done (compiling 512 x 1)",
        ),
        (
            {"dtype": "bfloat16", "compiled": {"ready": [[512, 1]], "compiling": [512, 2], "error": None}},
            "**Decoding:** bfloat16 merged copy, compiled for 512 tokens x 1 (cache x answers) (compiling 512 x 2)",
        ),
        (
            {"dtype": "bfloat16", "compiled": {"ready": [[512, 1]], "compiling": None, "error": "RuntimeError: no C++ compiler"}},
            "**Decoding:** bfloat16 merged copy, uncompiled (compiling failed: RuntimeError: no C++ compiler)",
        ),
    ],
)
def test_the_status_panel_says_how_answers_are_decoded(fast: dict | None, expected: str) -> None:
    from hitl_app.serving.compiled_decode import CompiledState
    from hitl_app.serving.fastpath import FastPathState
    from hitl_app.ui.format import decoding_line

    state = None
    if fast is not None:
        compiled = fast["compiled"] and CompiledState(buckets=[512], rows=[1, 2], compile_s={}, **fast["compiled"])
        state = FastPathState(dtype=fast["dtype"], holds=None, merge_ms=None, refused={}, compiled=compiled)
    assert decoding_line(state) == expected


def test_the_candidates_benchmark_records_which_path_decoded_each_answer(compiled: ModelManager) -> None:
    from hitl_app.bench.candidates import _shadow_generate, _stop_ids, forced_length, record_outputs

    copy, twin = compiled.fast.model, compiled.fast.compiled.twin
    before = copy.generation_config.min_new_tokens, twin.generation_config.min_new_tokens
    records: list = []
    try:
        # The merged copy shadowed before compiling: the twin, deep-copied from it, carries that wrapper.
        _shadow_generate(copy, "uncompiled", records, _stop_ids(compiled))
        twin.generate = copy.generate
        record_outputs(compiled, records)
        sampled = SAMPLED.model_copy(update={"max_new_tokens": 6})
        with forced_length(compiled, "fixed", 6):
            compiled.generate(PROMPTS[0], k=ROWS, sampling=sampled)  # a compiled shape
            compiled.generate(PROMPTS[0], k=2, sampling=sampled)  # two rows: not compiled here
        assert [(decoding, len(lengths)) for lengths, _, decoding in records] == [("compiled", ROWS), ("uncompiled", 2)]
        assert all(n == 6 for lengths, _, _ in records for n in lengths)  # forced on both models
        assert (copy.generation_config.min_new_tokens, twin.generation_config.min_new_tokens) == before
    finally:
        vars(copy).pop("generate", None)
        vars(twin).pop("generate", None)


class FakeCompiles:
    """Stands in for the two compile steps: the child process (``precompile``) and the load here."""

    def __init__(self, decoder: CompiledDecoder, child: bool = True) -> None:
        self.precompiled: list[tuple[int, int]] = []
        self.loads = 0  # Python calls made by the load here; frozen while an answer runs
        self.release = threading.Event()
        decoder.precompile = self.precompile if child else None

        def compile_shape(shape, example) -> None:
            while not self.release.is_set():
                self.step()

        decoder.compile_shape = compile_shape  # type: ignore[method-assign]

    def precompile(self, shape: tuple[int, int]) -> float:
        self.precompiled.append(shape)
        return 0.0

    def step(self) -> None:
        self.loads += 1


def test_compiling_pauses_while_an_answer_is_generated(compiled: ModelManager) -> None:
    from hitl_app.serving.activity import AnswerActivity

    activity = AnswerActivity()
    decoder = CompiledDecoder(compiled.fast.model, (BUCKET,), rows=(1, ROWS), activity=activity)
    fake = FakeCompiles(decoder)
    example = compiled._generate_kwargs(compiled.encode(PROMPTS[0]), compiled.sampling, 1, threading.Event())
    decoder.start(example, shapes=[(BUCKET, 1)])
    wait_for(lambda: fake.loads > 1000, 30)
    assert fake.precompiled == [(BUCKET, 1)], "the cold compile goes to the child process first"
    with activity.answering():
        threading.Event().wait(0.2)  # the loading thread reaches its next Python call and stops there
        paused_at = fake.loads
        threading.Event().wait(0.5)
        assert fake.loads == paused_at, "the load went on while an answer was being generated"
    wait_for(lambda: fake.loads > paused_at + 1000, 30)
    fake.release.set()
    assert decoder.wait(timeout_s=30) and decoder.ready == [(BUCKET, 1)]


def test_only_shapes_answers_ask_for_are_compiled(compiled: ModelManager) -> None:
    decoder = CompiledDecoder(compiled.fast.model, (BUCKET, 2 * BUCKET), rows=(1, ROWS))
    fake = FakeCompiles(decoder, child=False)
    fake.release.set()
    kwargs = compiled._generate_kwargs(compiled.encode(PROMPTS[0]), compiled.sampling, 1, threading.Event())
    assert decoder.shape_for(kwargs) is None and decoder.describe().waiting == [], "nothing is queued before start"
    decoder.start(kwargs, shapes=[])
    assert decoder.wait(timeout_s=30) and decoder.ready == []
    assert decoder.shape_for(kwargs) is None, "an answer never waits: it decodes uncompiled..."
    assert decoder.wait(timeout_s=30) and decoder.ready == [(BUCKET, 1)], "...and its shape is compiled for the next"
    assert decoder.shape_for(kwargs) == (BUCKET, 1)
    long = {**kwargs, "max_new_tokens": BUCKET}
    assert decoder.shape_for({**long, "num_return_sequences": 2}) is None, "2 rows is not a row count it compiles"
    assert decoder.shape_for(long) is None
    assert decoder.wait(timeout_s=30) and decoder.ready == [(BUCKET, 1), (2 * BUCKET, 1)]
    assert fake.precompiled == [], "no child process without a precompile step"
