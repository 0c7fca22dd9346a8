"""Wiring: settings -> store, registry, model manager, trainer, service, Gradio app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from .serving.base_model import (
    LoadOptions,
    base_name,
    ensure_embedded_base,
    load_base,
    load_tokenizer,
)
from .core.config import Settings, resolve_device
from .evaluation.judge_cache import JudgeCache
from .serving.compiled_decode import default_buckets
from .serving.fastpath import resolve_serve_dtype
from .serving.manager import ModelManager
from .serving.rewards import RewardScorer
from .serving.identity_adapter import write_identity_adapter
from .serving.vllm_client import VllmClient
from .serving.vllm_models import VllmModels
from .serving.vllm_server import VllmServer, VllmServerSpec, vllm_server_args
from .serving.threads import serve_threads_policy
from .versions.registry import Registry
from .feedback.records import Sampling
from .feedback.question_sets import SHIPPED_QUEUE_SET
from .service.importing import SYSTEM_USER, import_questions
from .service.service import HITLService
from .feedback.store import FeedbackStore
from .training.sft import TrainConfig
from .ui.demo import build_demo
from .training.process import TrainerClient

log = logging.getLogger(__name__)


@dataclass
class App:
    """The running pieces, so callers (main, tests, benchmarks) can reach and close them."""

    settings: Settings
    service: HITLService
    demo: gr.Blocks | None = None

    def close(self) -> None:
        """Stop the server, the ACTIVE watcher and the trainer process."""
        if self.demo is not None:
            self.demo.close()
        self.service.close()
        self.service.models.close()
        self.service.trainer.stop()


def base_source(settings: Settings, registry: Registry) -> str:
    """The base model to load: ``--base-model``, else the embedded model (converted on first use)."""
    if settings.base_model:
        return settings.base_model
    return str(ensure_embedded_base(registry.base_dir))


def create_service(settings: Settings) -> HITLService:
    """Load the model and build the service.

    With auto-retrain on, the trainer process is started now, so its imports are warm before the
    first round. With it off, rounds are rare and asked for by an admin, so the process starts at
    the first request instead of taking memory and start-up CPU from the app.

    Raises:
        ModelWheelMissing: the embedded model is needed but not installed.
    """
    registry = Registry(settings.checkpoints_dir)
    registry.clean_staging()
    source = base_source(settings, registry)
    log.info("loading base model %s", base_name(registry.base_dir) if not settings.base_model else source)
    serving = settings.serving_config
    options = LoadOptions(device=resolve_device(serving.device), load_in_4bit=serving.load_in_4bit)
    tokenizer = load_tokenizer(source)
    sampling = Sampling(
        do_sample=serving.temperature > 0,
        temperature=serving.temperature,
        top_p=serving.top_p,
        max_new_tokens=serving.max_new_tokens,
    )
    serve_dtype = resolve_serve_dtype(serving.serve_dtype, options.device, options.load_in_4bit)
    # The trainer calibrates the clinical-text judge when it starts; the app reads it from there.
    judges = JudgeCache.for_settings(settings, source)
    if serving.serve_backend == "vllm":
        models = vllm_models(settings, source, tokenizer, registry, sampling, judges)
    else:
        lora = TrainConfig.from_config(settings.training_config).lora_config()
        models = ModelManager.wrap(
            load_base(source, options), tokenizer, registry, sampling, serving.system_prompt or None, lora, serve_dtype,
            serving.max_batch, judges,
        )  # fmt: skip
    models.watch()
    if serving.compile_decode and serving.serve_backend == "local":
        # Single answers and the default candidates may be compiled: the default candidates in the
        # first cache length at once, the others when an answer first needs them; each compiled
        # cold in a low-priority process, so that answers never wait for a compile.
        buckets = default_buckets(serving.max_new_tokens, models.context_length)
        first = [(buckets[0], serving.candidates)] if buckets else []
        models.start_compiled_decoding(buckets, rows=(1, serving.candidates), shapes=first, precompile_from=source)
    trainer = TrainerClient(settings, source)
    models.threads_policy = serve_threads_policy(serving, trainer)
    models.activity.subscribe(trainer.answering)  # the trainer keeps to few threads while answers stream
    if settings.auto_retrain:
        trainer.start()
    store = FeedbackStore(settings.feedback_dir)
    rewards = None
    if settings.reward_model == "on":  # loaded at the first answer a reward model can score
        rewards = RewardScorer(registry, source, tokenizer, options.device, options.load_in_4bit, serve_dtype)
    service = HITLService(settings, store, models, registry, trainer, rewards=rewards)
    seed_queue(service)
    service.pregenerator.start()
    return service


def vllm_models(
    settings: Settings, source: str, tokenizer, registry: Registry, sampling: Sampling, judges: JudgeCache
) -> VllmModels:
    """The vLLM backend: connect to ``--vllm-url``, or start a server from ``--vllm-python``; serve ACTIVE.

    Raises:
        VllmStartFailed: the server the app starts did not come up.
        VllmError: the server at ``--vllm-url`` cannot be reached.
    """
    from transformers import AutoConfig

    serving = settings.serving_config
    context = int(getattr(AutoConfig.from_pretrained(source), "max_position_embeddings", 2048))
    server = None
    url = serving.vllm_url
    if url is None:
        spec = VllmServerSpec(
            python=serving.vllm_python, model=source, max_lora_rank=settings.lora_r, max_loras=serving.vllm_max_loaded + 1,
            max_model_len=context, extra_args=vllm_server_args(serving.vllm_args),
        )  # fmt: skip
        server = VllmServer(spec)
        url = server.start()
    # The zero adapter that answers for base; a remote server must see the checkpoints folder at the same path.
    lora = TrainConfig.from_config(settings.training_config).lora_config()
    identity = write_identity_adapter(source, lora, registry.root / ".vllm-identity")
    models = VllmModels(
        VllmClient(url), tokenizer, registry, sampling, serving.system_prompt or None, context,
        max_loaded=serving.vllm_max_loaded, server=server, judges=judges, identity=str(identity.resolve()),
    )  # fmt: skip
    try:
        models.client.served()  # a clear error now if --vllm-url is wrong
        models.sync()
    except BaseException:
        models.close()
        raise
    return models


def seed_queue(service: HITLService) -> None:
    """On a first start (nothing ever imported), queue the shipped patient questions, so a new team
    has a set to work through; an admin imports their own beside it or instead (the service read
    the queue when it was built)."""
    if service.queue.batches:
        return
    report = import_questions(
        SHIPPED_QUEUE_SET, SYSTEM_USER, service.queue, service.safety, redact=service.settings.redact_phi,
        batch="shipped patient questions",
    )  # fmt: skip
    log.info("first start: %s", report.summary())


def launch(settings: Settings, service: HITLService, prevent_thread_lock: bool = False) -> App:
    """Build the UI and start serving it (blocking unless ``prevent_thread_lock``)."""
    users = settings.users()
    demo = build_demo(service, {u.username: u.role for u in users})
    demo.queue(default_concurrency_limit=16)
    app = App(settings=settings, service=service, demo=demo)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        auth=[(u.username, u.password) for u in users] or None,
        prevent_thread_lock=True,
        show_error=True,
        # Gradio's banner suggests code changes ("set share=True in launch()"); say it in the app's terms.
        quiet=True,
    )
    log.info("serving on %s%s", demo.local_url, f" and publicly on {demo.share_url}" if demo.share_url else " (--share for a public link)")
    if not prevent_thread_lock:
        demo.block_thread()
    return app
