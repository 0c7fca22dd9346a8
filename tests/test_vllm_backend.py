"""The vLLM serving backend (``--serve-backend vllm``) against a real vLLM server on the embedded model.

One vLLM OpenAI server (the CPU build, from ``.venv-vllm``, which ``make test`` builds) serves the
module: the app's own ``VllmServer`` starts it, as ``python main.py --serve-backend vllm`` does,
and every test talks to it through ``--vllm-url``. Versions are published into a temporary
registry: one by a real round in the trainer process, the others as random adapters of the app's
LoRA shape, whose greedy answers differ from each other and from the base's.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from pathlib import Path

import pytest

from hitl_app.feedback.records import BASE_VERSION, Sampling

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
GREEDY = Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=12)
QUESTION = "What is the first-line treatment for hypertension in adults?"


@pytest.fixture(scope="module")
def vllm_url(embedded_base: Path):
    """A vLLM server on the embedded base for the module (or ``HITL_TEST_VLLM_URL``'s, already running)."""
    from hitl_app.serving.vllm_server import VllmServer, VllmServerSpec, vllm_server_args

    if os.environ.get("HITL_TEST_VLLM_URL"):
        yield os.environ["HITL_TEST_VLLM_URL"]
        return
    if not (REPO / ".venv-vllm" / ".installed").is_file():
        pytest.fail("the vLLM tests need vLLM's environment: run `make vllm-env` (make test builds it)")
    spec = VllmServerSpec(
        python=VLLM_PYTHON, model=str(embedded_base), max_lora_rank=16, max_loras=5, max_model_len=2048,
        extra_args=vllm_server_args("--dtype float32"),
    )  # fmt: skip
    server = VllmServer(spec)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def vllm_settings(embedded_settings, vllm_url: str):
    def make(**overrides):
        values = dict(
            serve_backend="vllm", vllm_url=vllm_url, candidates=1, temperature=0.0, max_new_tokens=GREEDY.max_new_tokens,
            compile_decode=False, reward_model="off", pregenerate=0, auto_retrain=False,
        )  # fmt: skip
        return embedded_settings(**(values | overrides))

    return make


def _models(settings, max_loaded: int = 4):
    """A ``VllmModels`` on the settings' registry, as ``app.vllm_models`` builds it for ``--vllm-url``."""
    from hitl_app.serving.base_model import load_tokenizer
    from hitl_app.serving.identity_adapter import write_identity_adapter
    from hitl_app.serving.vllm_client import VllmClient
    from hitl_app.serving.vllm_models import VllmModels
    from hitl_app.training.sft import TrainConfig
    from hitl_app.versions.registry import Registry

    registry = Registry(settings.checkpoints_dir)
    lora = TrainConfig.from_config(settings.training_config).lora_config()
    identity = write_identity_adapter(settings.base_model, lora, registry.root / ".vllm-identity")
    models = VllmModels(
        VllmClient(settings.vllm_url), load_tokenizer(settings.base_model), registry, GREEDY, settings.system_prompt,
        2048, max_loaded=max_loaded, identity=str(identity),
    )  # fmt: skip
    models.sync()  # as the app does at start-up
    return models


def _random_versions(settings, count: int) -> list[str]:
    """``count`` published random adapters (ACTIVE left on base), with distinct greedy answers."""
    from hitl_app.bench.adapters import publish_random_adapters
    from hitl_app.versions.registry import Registry

    versions = publish_random_adapters(settings, Path(settings.base_model), count=count, b_std=0.5)
    Registry(settings.checkpoints_dir).set_active(BASE_VERSION, by="test")
    return versions


def test_an_answer_comes_from_vllm_tagged_with_the_base(vllm_settings) -> None:
    from hitl_app.app import create_service
    from hitl_app.service.service import Caller
    from hitl_app.ui.format import status_markdown

    service = create_service(vllm_settings())
    try:
        caller = Caller("drlee", "clinician")
        generation = service.ask(QUESTION, caller)
        assert generation.version == BASE_VERSION
        assert generation.candidates[0].strip()
        *partial, (texts, version, streamed) = list(service.ask_stream(QUESTION, caller))
        assert partial and version == BASE_VERSION and streamed is not None
        assert texts[0] == generation.candidates[0]  # greedy: the same answer, streamed
        status = service.status()
        assert status.vllm is not None and status.vllm.url == vllm_settings().vllm_url
        assert "vLLM at" in status_markdown(status)
    finally:
        service.close()
        service.models.close()
        service.trainer.stop()


def test_judgements_retrain_and_vllm_serves_the_new_version(vllm_settings) -> None:
    from hitl_app.app import create_service
    from hitl_app.service.service import Caller

    settings = vllm_settings(
        auto_retrain=True, retrain_threshold=2, gate="off", num_epochs=1, sft_loss_floor=0.0, max_new_tokens=8,
        redteam_prompts=0, eval_probe_prompts=1, round_budget_s=10,  # the evaluation has its own tests
    )
    service = create_service(settings)
    try:
        clinician = Caller("drlee", "clinician")
        for question in (QUESTION, "How is asthma treated?"):
            generation = service.ask(question, clinician)
            service.accept(generation.id, clinician)
        deadline = time.monotonic() + 600
        while service.models.version == BASE_VERSION and time.monotonic() < deadline:
            time.sleep(1)
        assert service.models.version == "v0001", service.trainer_status()
        assert "v0001" in service.models.client.served()
        assert service.ask(QUESTION, clinician).version == "v0001"
    finally:
        service.close()
        service.models.close()
        service.trainer.stop()


def test_publish_rollback_and_unloading_beyond_the_limit(vllm_settings) -> None:
    from hitl_app.versions.registry import Registry

    settings = vllm_settings()
    versions = _random_versions(settings, 3)
    registry = Registry(settings.checkpoints_dir)
    models = _models(settings, max_loaded=2)
    try:
        answers = {BASE_VERSION: models.generate(QUESTION).candidates[0]}
        for version in versions:
            registry.set_active(version, by="test")
            assert models.sync() is True
            answer = models.generate(QUESTION)
            assert answer.version == version
            answers[version] = answer.candidates[0]
            assert len(models.loaded) <= 2 and version in models.loaded
            assert set(models.loaded) <= set(models.client.served())
        assert len(set(answers.values())) == len(answers), answers  # each version answers in its own words
        assert versions[0] not in models.client.served()  # unloaded: beyond --vllm-max-loaded
        registry.set_active(versions[0], by="test", reason="rollback")
        models.sync()
        rolled_back = models.generate(QUESTION)
        assert (rolled_back.version, rolled_back.candidates[0]) == (versions[0], answers[versions[0]])
        assert models.version == versions[0] and versions[0] in models.client.served()
    finally:
        models.close()


def test_a_failed_load_keeps_the_old_version_and_shows_why(vllm_settings) -> None:
    from hitl_app.app import create_service
    from hitl_app.core.errors import UserError
    from hitl_app.service.service import Caller
    from hitl_app.ui.format import status_markdown
    from hitl_app.versions.registry import Registry

    settings = vllm_settings()
    good, bad = _random_versions(settings, 2)
    registry = Registry(settings.checkpoints_dir)
    config = registry.adapter_dir(bad) / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"r": 999}))  # beyond the server's LoRA rank
    service = create_service(settings)
    try:
        admin = Caller("admin", "admin")
        service.activate(good, admin)
        with pytest.raises(UserError, match=f"{bad} could not be served, so {good} still serves"):
            service.activate(bad, admin)
        assert service.models.version == good and registry.active().version == good  # ACTIVE restored
        registry.set_active(bad, by="trainer")  # as a round publishing it would
        assert service.models.sync() is False
        assert service.models.version == good
        assert service.ask(QUESTION, Caller("drlee")).version == good
        failure = service.status().vllm.load_failure
        assert failure is not None and failure.version == bad and "rank" in failure.error.lower()
        assert f"vLLM could not load {bad}" in status_markdown(service.status())
        assert service.models.sync() is False  # not tried again at every poll
    finally:
        service.close()
        service.models.close()
        service.trainer.stop()


def test_no_answer_mixes_versions_while_versions_swap(vllm_settings) -> None:
    """8 clients ask while versions swap under them: every answer is exactly its tagged version's answer."""
    from hitl_app.versions.registry import Registry

    settings = vllm_settings()
    versions = _random_versions(settings, 2)
    registry = Registry(settings.checkpoints_dir)
    models = _models(settings)
    try:
        expected = {}
        for version in [BASE_VERSION, *versions]:
            expected[version] = models.generate(QUESTION, version=version).candidates[0]
        assert len(set(expected.values())) == 3, expected
        stop = threading.Event()

        def swapper() -> None:
            order = [*versions, BASE_VERSION]
            i = 0
            while not stop.is_set():
                registry.set_active(order[i % 3], by="test")
                models.sync()
                i += 1
                time.sleep(0.3)

        thread = threading.Thread(target=swapper)
        thread.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: models.generate(QUESTION), range(24)))
        finally:
            stop.set()
            thread.join()
        assert len({a.version for a in answers}) > 1  # the swaps happened while clients were answered
        for answer in answers:
            assert answer.candidates[0] == expected[answer.version], answer.version
    finally:
        models.close()


def test_a_restarted_app_or_server_serves_active_again(vllm_settings) -> None:
    from hitl_app.versions.registry import Registry

    settings = vllm_settings()
    (version,) = _random_versions(settings, 1)
    Registry(settings.checkpoints_dir).set_active(version, by="test")
    first = _models(settings)
    try:
        assert first.version == version
        first.client.unload(version)  # vLLM restarted while the app was down: the adapter is gone
    finally:
        first.close()
    restarted = _models(settings)  # the app starts again: nothing loaded, ACTIVE on disk
    try:
        assert restarted.version == version and version in restarted.client.served()
        restarted.client.unload(version)  # vLLM restarted under the running app
        restarted.check_server()
        assert version in restarted.client.served()
        assert restarted.generate(QUESTION).version == version
    finally:
        restarted.close()
