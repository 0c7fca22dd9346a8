"""Helpers the tests share: a tiny Llama built in memory, the tiny-model settings, a running app.

No test downloads anything. The tiny base is a 2-layer, 32-wide Llama with a byte-level BPE
tokenizer trained on a few medical sentences and a ChatML chat template, so every code path
(chat template, LoRA on all projections, TRL, hot-swap) runs as it does on the real model.
Fixtures live in ``conftest.py``; tests import these helpers from ``tests.helpers``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from hitl_app.core.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is the first-line treatment for hypertension in adults?",
    "Paracetamol 500 mg every 6 hours, at most 4 g a day.",
    "Sudden chest pain needs urgent assessment: call emergency services.",
    "Asthma is treated with inhaled corticosteroids and a reliever inhaler.",
    "You are a careful medical assistant helping clinicians.",
    "Stroke signs: face drooping, arm weakness, speech difficulty.",
] * 4


# The logins of the app fixture unless a module sets APP_AUTH.
ADMIN = ("admin", "admin-pw")
CLINICIAN = ("drlee", "lee-pw")
DEFAULT_AUTH = [f"{ADMIN[0]}:{ADMIN[1]}:admin", f"{CLINICIAN[0]}:{CLINICIAN[1]}"]

# The settings of every tiny-model test: small, fast, deterministic rounds. The tiny model's rounds
# keep the volume of training their tests were written for; the app's recipe has its own tests.
TINY_SETTINGS: dict[str, Any] = {
    "device": "cpu",
    "max_new_tokens": 8,
    "candidates": 1,
    "retrain_threshold": 3,
    "learning_rate": 5e-3,
    "preference_learning_rate": 5e-3,
    "num_epochs": 1,
    "train_batch_size": 4,
    "sft_loss_floor": 0.0,  # a tiny model's rounds train their fixed number of steps (the floor has its own test)
    "lora_r": 4,
    "lora_alpha": 8,
    "max_seq_length": 256,
    "trainer_threads": 1,
    "holdout_fraction": 0.0,
    "compile_decode": False,  # compiled decoding has its own tests; compiling costs CPU-seconds
    "pregenerate": 0,  # candidates generated ahead for queued items have their own tests
    "reward_model": "off",  # the reward model has its own tests (test_reward_*, and /ask's scores in test_api)
}


def build_tiny_base(path: Path, seed: int = 0) -> Path:
    """Write a tiny Llama and its tokenizer to ``path`` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def wait_for(predicate, timeout_s: float = 120.0, every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy, and return that; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def api_client(url: str, login: tuple[str, str]):
    """A logged-in ``gradio_client.Client`` for an app the tests serve over plain HTTP on loopback.

    ``ssl_verify=False`` only stops httpx loading the CA bundle for every request (about 20 ms of
    CPU each, some 30% of the load test's CPU samples): nothing here speaks TLS.
    """
    from gradio_client import Client

    return Client(url, auth=login, verbose=False, ssl_verify=False)


def start_app(root: Path, tiny_base: Path, auth: list[str], **overrides):
    """Launch the whole app (server, model manager, trainer process) on the tiny model under ``root``.

    The returned ``App`` has ``url`` set; close it with ``close()``.
    """
    from hitl_app.app import create_service, launch
    from hitl_app.core.config import Settings

    values = {
        **TINY_SETTINGS,
        "base_model": str(tiny_base),
        "feedback_dir": root / "feedback",
        "checkpoints_dir": root / "checkpoints",
        "temperature": 0.7,
        "port": free_port(),
        "auth": auth,
    }
    settings = Settings(**{**values, **overrides})
    running = launch(settings, create_service(settings), prevent_thread_lock=True)
    running.url = f"http://127.0.0.1:{settings.port}/"
    return running


_JUDGED_AT = itertools.count()


def judgement(reviewer: str, action: str, candidate: int = 0, ranking: list[list[int]] | None = None):
    """A ``Feedback`` of generation g1, each one a minute after the one built before it, with the
    text an edit needs and the reason a rejection needs."""
    from datetime import datetime, timedelta, timezone

    from hitl_app.feedback.records import Feedback

    return Feedback(
        reviewer=reviewer,
        generation_id="g1",
        action=action,
        candidate=candidate,
        ranking=ranking,
        reason="unsafe dose" if action == "reject" else None,
        text="corrected answer" if action == "edit" else None,
        created_at=datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=next(_JUDGED_AT)),
    )


def store_judgement(store, question: str, candidates: list[str], system_prompt: str | None = None, reviewer: str = "dr-test", **feedback):
    """Append a base-model generation of ``candidates`` to ``question`` and ``reviewer``'s
    judgement of it (``Feedback`` fields: ``action``, ``ranking``, ``id``...) to ``store``; returns
    the generation."""
    from hitl_app.feedback.records import BASE_VERSION, Feedback, Generation, Sampling

    gen = Generation(
        reviewer=reviewer,
        prompt=question,
        system_prompt=system_prompt,
        candidates=candidates,
        version=BASE_VERSION,
        sampling=Sampling(do_sample=True, temperature=0.7, top_p=1.0, max_new_tokens=64),
        prompt_tokens=0,
    )
    store.append(gen)
    store.append(Feedback(reviewer=reviewer, generation_id=gen.id, **feedback))
    return gen


# A small question set for the team-review UI tests: two questions with reference answers.
QUESTION_SET = [
    {"question": "How should a sprained ankle be managed at home?", "answer": "Rest, ice, compression and elevation.",
     "specialty": "orthopaedics"},
    {"question": "When is a fever in an adult an emergency?", "answer": "With a stiff neck, confusion or a rash.",
     "specialty": "general"},
]  # fmt: skip


def one_dpo_step(dataset, base: Path, workdir: Path) -> tuple[float, bool]:
    """Train one TRL ``DPOTrainer`` step with LoRA on ``dataset`` (an exported DPO set as loaded);
    returns the logged loss and whether the LoRA weights changed (the base's never do)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    args = DPOConfig(
        output_dir=str(workdir), per_device_train_batch_size=2, max_steps=1, learning_rate=5e-3,
        lr_scheduler_type="constant", max_length=256, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, loss_type=["sigmoid"],
        activation_checkpointing=False, precompute_ref_log_probs=False,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(base), peft_config=lora,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1 and len(losses) == 1
    after = dict(trainer.model.named_parameters())
    return float(losses[0]), any(not torch.equal(b, after[n]) for n, b in before.items())


def urgent_generation(store, question: str, reviewer: str = "dr-a"):
    """Append a greedy base generation for ``question``: an urgent answer (0) and one that waits (1)."""
    from hitl_app.feedback.records import BASE_VERSION, Generation, Sampling

    gen = Generation(
        reviewer=reviewer,
        prompt=question,
        candidates=["Call 999 now and seek urgent care.", "Rest and see how it goes tomorrow."],
        version=BASE_VERSION,
        sampling=Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=8),
        prompt_tokens=12,
    )
    store.append(gen)
    return gen
