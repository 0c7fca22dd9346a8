"""Settings: every CLI flag is one field here, and every field is also an ``HITL_<FIELD>`` env var.

Validation collects every problem it finds and raises one error that lists them all, before any
model is loaded.

Each part of the app reads its own section, a frozen model holding only the fields it needs
(``ServingConfig``, ``TrainingConfig``, ``EvaluationConfig``, ``GateConfig``); ``Settings`` builds
them (``settings.training_config`` and so on). A section's fields have the names, types and
meanings of the flags they come from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful medical assistant helping clinicians. Answer accurately and concisely, "
    "state uncertainty, and advise urgent care when symptoms suggest an emergency."
)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Role = Literal["admin", "clinician"]
MAX_CANDIDATES = 4
MAX_BEST_OF = 16  # answers sampled in one batched call for --best-of
ROLES: tuple[str, ...] = ("admin", "clinician")


class User(BaseModel):
    """One login: a username, its password and its role."""

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    role: Role = "clinician"


class _Section(BaseModel):
    """A part's view of the settings: the named flags, read only."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingConfig(_Section):
    """What answering questions reads: where the model runs and how it decodes."""

    device: Literal["auto", "cpu", "cuda"]
    load_in_4bit: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    system_prompt: str
    candidates: int
    serve_threads: int
    trainer_threads: int  # the cores a training round takes, which answers leave to it
    serve_dtype: Literal["auto", "float32", "bfloat16"]
    compile_decode: bool
    max_batch: int
    serve_backend: Literal["local", "vllm"]
    vllm_url: str | None
    vllm_max_loaded: int
    vllm_python: Path
    vllm_args: str


class TrainingConfig(_Section):
    """What a training round reads: its rows (replay, hold-out), LoRA, the optimiser, the method."""

    replay_size: int
    holdout_fraction: float
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    load_in_4bit: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]
    learning_rate: float
    num_epochs: float
    preference_epochs: float
    preference_learning_rate: float
    sft_loss_floor: float
    train_batch_size: int
    max_seq_length: int
    train_method: Literal["auto", "sft", "dpo", "kto", "rl"]
    beta: float
    trainer_threads: int
    round_budget_s: float
    train_launcher: Literal["single", "accelerate"]
    train_processes: int
    accelerate_config: Path | None
    reviews_per_item: int
    consensus_threshold: float
    reward_model: Literal["on", "off"]
    reward_epochs: float
    reward_learning_rate: float
    rl_prompts: int
    rl_generations: int
    rl_max_new_tokens: int
    rl_beta: float
    rl_learning_rate: float
    system_prompt: str


class TeamConfig(_Section):
    """What team review reads: how many clinicians judge each queued item, and when they agree."""

    reviews_per_item: int
    consensus_threshold: float
    rubric: Literal["on", "off"]
    pregenerate: int
    candidates: int
    uncertain_first: Literal["on", "off"]


class EvaluationConfig(_Section):
    """What the evaluation of a new version reads: which data, and how it is prompted and scored."""

    holdout_fraction: float
    system_prompt: str
    eval_probe_prompts: int
    redteam_prompts: int
    beta: float  # scales the implicit reward margin of held-out pairs, as in training
    seed: int


class GateConfig(_Section):
    """What the promotion gate reads: whether it blocks, and the tolerance of each rule."""

    gate: Literal["on", "off"]
    gate_max_accuracy_drop: float
    gate_min_pairs: int
    gate_max_perplexity_rise: float
    gate_kl_budget: float
    gate_max_logprob_drop: float
    gate_max_loop_rise: float
    gate_max_unfinished_rise: float
    gate_max_unclear_rise: float
    gate_max_safety_drop: float

    @property
    def enabled(self) -> bool:
        """Whether a version that fails a rule is held back (``--gate on``)."""
        return self.gate == "on"


CONFIG_SECTIONS: tuple[type[_Section], ...] = (ServingConfig, TrainingConfig, TeamConfig, EvaluationConfig, GateConfig)
SectionT = TypeVar("SectionT", bound=_Section)


class Settings(BaseSettings):
    """Command-line flags of ``main.py`` (each also an ``HITL_*`` environment variable)."""

    model_config = SettingsConfigDict(
        env_prefix="HITL_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="main.py",
        cli_exit_on_error=True,
        extra="ignore",
    )

    # --- the feedback loop ---
    retrain_threshold: int = Field(20, description="Retrain after this many new judgements.")
    auto_retrain: bool = Field(True, description="Retrain automatically (--no-auto-retrain: only on an admin's request).")
    replay_size: int = Field(40, description="At most this many older judgements are replayed in each round.")

    # --- serving ---
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(7860, description="Port to listen on.")
    share: bool = Field(False, description="Open a public share link (refused without --auth/--auth-file).")
    auth: list[str] = Field(
        default_factory=list,
        description="A login as USER:PASS or USER:PASS:ROLE (ROLE admin|clinician, default clinician); repeatable.",
    )
    auth_file: Path | None = Field(
        None,
        description='JSON file of logins: {"users": [{"username": .., "password": .., "role": "admin"|"clinician"}]}.',
    )

    # --- model ---
    base_model: str | None = Field(
        None, description="Path or hub id of a causal LM to use instead of the embedded SmolLM2-135M-Instruct."
    )
    load_in_4bit: bool = Field(False, description="Load the base model in 4-bit nf4 with bf16 compute (CUDA only).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    max_new_tokens: int = Field(256, description="Longest answer, in tokens.")
    temperature: float = Field(0.7, description="Sampling temperature; 0 means greedy decoding.")
    top_p: float = Field(0.9, description="Nucleus sampling threshold.")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System message put before every question.")
    candidates: int = Field(2, description=f"Candidate answers per question, sampled in one batched call (1..{MAX_CANDIDATES}).")
    best_of: int = Field(
        0,
        description=f"Sample this many answers in one batched call and show the --candidates best by the reward model "
        f"(0: off; at most {MAX_BEST_OF}); the stored generation keeps the hidden ones with their scores. Needs "
        "sampling and --reward-model on; until a version has a reward model the first ones are shown.",
    )
    serve_threads: int = Field(
        0, description="CPU threads for answering (0: all cores, minus the trainer's while it trains)."
    )
    serve_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="CPU answers from a merged copy in this dtype (auto: bfloat16 if the CPU has native bf16, "
        "else float32 from the PEFT model). Training and evaluation stay float32; CUDA and 4-bit are unchanged.",
    )

    max_batch: int = Field(
        8,
        description="Most questions answered together: questions asked while the model is busy are answered "
        "in one batched call, up to this many (1: one at a time).",
    )
    serve_backend: Literal["local", "vllm"] = Field(
        "local",
        description="local: answers come from the model in this process; vllm: from a vLLM OpenAI server (started "
        "from --vllm-python, or the one at --vllm-url), each version loaded into it as a LoRA adapter.",
    )
    vllm_url: str | None = Field(
        None,
        description="--serve-backend vllm: the base URL of a running vLLM OpenAI server (e.g. http://gpu-1:8000), "
        "serving the base model under the name `base`, with LoRA enabled and runtime LoRA updating allowed "
        "(docs/deployment.md); without it, the app starts one itself.",
    )
    vllm_max_loaded: int = Field(
        4,
        description="--serve-backend vllm: versions kept loaded in vLLM; older ones are unloaded (never the serving "
        "one, nor one still answering).",
    )
    vllm_python: Path = Field(
        Path(".venv-vllm/bin/python"),
        description="--serve-backend vllm without --vllm-url: the Python with vLLM installed (`make vllm-env` builds it).",
    )
    vllm_args: str = Field(
        "",
        description="--serve-backend vllm without --vllm-url: more arguments for the vLLM server the app starts, in "
        "vLLM's own flags (docs/deployment.md). On a machine without CUDA the app reserves a fifth of memory for "
        "vLLM's cache unless these set its memory share.",
    )
    compile_decode: bool = Field(
        True,
        description="With the bf16 CPU copy, compile single answers' decoding in the background after start-up "
        "(--no-compile-decode: never; answers then decode uncompiled).",
    )

    # --- team review ---
    reviews_per_item: int = Field(
        1,
        description="Clinicians who judge each queued item (overlap); above 1, training uses only items their "
        "judgements resolve (plus every edit), and the retrain threshold counts resolved items.",
    )
    consensus_threshold: float = Field(
        0.6,
        description="Share of an item's reviewers who must agree (accept/reject majority, or ranking pairs kept by the "
        "merged ranking) for it to be resolved; below it, the item waits for an admin's adjudication.",
    )
    uncertain_first: Literal["on", "off"] = Field(
        "off",
        description="on: within the same priority and safety flag, queued items whose candidates are generated come "
        "first, those whose top two candidates the reward model scores closest first (where it is least sure); off: "
        "oldest first.",
    )
    rubric: Literal["on", "off"] = Field(
        "off", description="on: judgements may carry structured ratings on the axes of hitl_app/data/rubric.json."
    )
    pregenerate: int = Field(
        3, description="Queued items whose candidates are generated ahead, while the model is idle (0: only on Next)."
    )

    # --- storage ---
    feedback_dir: Path = Field(Path("feedback"), description="Where feedback.jsonl lives.")
    checkpoints_dir: Path = Field(Path("checkpoints"), description="Where base/, vNNNN/ and ACTIVE live.")

    # --- LoRA and training (defaults: seed 002's Model B) ---
    lora_r: int = Field(16, description="LoRA rank.")
    lora_alpha: int = Field(32, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, description="LoRA dropout.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS), description="Modules that get LoRA adapters."
    )
    learning_rate: float = Field(5e-4, description="Learning rate of each round (constant).")
    num_epochs: float = Field(
        3.0, description="SFT epochs over each round's new rows (rows replayed from earlier rounds are seen once)."
    )
    preference_epochs: float = Field(1.0, description="Epochs of the preference stage (DPO/KTO) over its rows.")
    preference_learning_rate: float = Field(
        5e-5, description="Learning rate of the preference stage (constant); lower than SFT's, as DPO over-optimises."
    )
    sft_loss_floor: float = Field(
        1.0,
        description="SFT stops once its mean training loss over the last pass of distinct rows is at most this "
        "(nats per token; 0: never stops early): below it the model learns the rows by heart.",
    )
    train_batch_size: int = Field(1, description="Rows per optimisation step.")
    max_seq_length: int = Field(1024, description="Longest training row, in tokens.")
    train_method: Literal["auto", "sft", "dpo", "kto", "rl"] = Field(
        "auto",
        description="Preference stage after SFT: auto (DPO when there are pairs, else KTO), dpo, kto, sft (none), or "
        "rl: the reward model on the round's pairs, then RL (TRL's GRPO) against it and the safety checks on "
        "questions nobody judged (--rl-prompts).",
    )
    beta: float = Field(0.1, description="DPO/KTO beta: how far the policy may move from the reference (base).")
    reward_model: Literal["on", "off"] = Field(
        "on",
        description="on: every round with preference pairs also trains a reward model (TRL RewardTrainer, a LoRA "
        "with a score head on the same base, continuing from the parent's) and publishes it beside the policy "
        "adapter, with its held-out pairwise accuracy, and the app scores the candidates it shows with it; off: no "
        "reward model and no scores.",
    )
    reward_epochs: float = Field(1.0, description="Epochs of the reward model's training over the round's pairs.")
    reward_learning_rate: float = Field(2e-4, description="Learning rate of the reward model's training (constant).")
    rl_prompts: int = Field(
        8,
        description="--train-method rl: questions nobody judged (queued, asked but not judged, then the shipped patient "
        "questions) that a round's RL stage samples answers to.",
    )
    rl_generations: int = Field(4, description="--train-method rl: answers sampled per question (GRPO's group size, at least 2).")
    rl_max_new_tokens: int = Field(64, description="--train-method rl: the longest sampled answer, in tokens.")
    rl_beta: float = Field(0.04, description="--train-method rl: KL coefficient to the base model.")
    rl_learning_rate: float = Field(
        3e-4,
        description="--train-method rl: learning rate of the RL stage (constant). A stage is one optimiser step per "
        "question, so it is higher than the preference stage's.",
    )
    trainer_threads: int = Field(
        1,
        description="CPU threads the trainer uses while answers are streaming, so they stay responsive; between "
        "answers it uses every core other processes leave idle.",
    )
    train_launcher: Literal["single", "accelerate"] = Field(
        "single",
        description="single: a round's SFT and preference stages run in the trainer process; accelerate: they run "
        "under `accelerate launch` in --train-processes processes (DDP: gloo on CPU, NCCL on GPUs; FSDP or "
        "DeepSpeed from --accelerate-config), and the trainer process evaluates and publishes once.",
    )
    train_processes: int = Field(
        1,
        description="--train-launcher accelerate: processes (one per GPU on CUDA). Each takes an equal share of every "
        "batch, so --train-batch-size must be a multiple of it.",
    )
    accelerate_config: Path | None = Field(
        None,
        description="--train-launcher accelerate: an accelerate config file (`accelerate config`) for FSDP or "
        "DeepSpeed; without one, plain DDP.",
    )
    round_budget_s: float = Field(
        0,
        description="Seconds a training round should take (0: no budget). With a budget, the replay sample is cut so "
        "the estimated training fits, and the evaluation's sample questions, red-team and KL prompts are cut to what "
        "the time left allows; the manifest names every figure measured on fewer items. Estimates come from the "
        "previous round's stage times.",
    )

    # --- evaluation and the promotion gate ---
    holdout_fraction: float = Field(
        0.2,
        description="Share of edits, rankings and votes kept out of training to evaluate versions on (chosen by record id).",
    )
    gate: Literal["on", "off"] = Field(
        "on", description="on: a new version is served only if it passes the promotion gate; off: always."
    )
    gate_max_accuracy_drop: float = Field(
        0.05, description="Gate: held-out preference accuracy may fall at most this much below the serving version's."
    )
    gate_min_pairs: int = Field(4, description="Gate: held-out pairs needed before preference accuracy is checked.")
    gate_max_perplexity_rise: float = Field(
        0.10, description="Gate: probe-set perplexity may rise at most this fraction above the serving version's."
    )
    gate_kl_budget: float = Field(
        0.25,
        description="Gate: largest KL(new || base), in nats per token on probe prompts, for a change that held-out "
        "clinician data does not support (one it supports may move further; KL is always reported).",
    )
    gate_max_logprob_drop: float = Field(
        0.25,
        description="Gate: held-out edited answers (else the shipped references) may lose at most this log-prob per token.",
    )
    gate_max_loop_rise: float = Field(
        0.1, description="Gate: the share of sampled answers caught in a repeated loop may rise at most this much."
    )
    gate_max_unfinished_rise: float = Field(
        0.25, description="Gate: the share of sampled answers that end before the token limit may fall at most this much."
    )
    gate_max_unclear_rise: float = Field(
        0.1,
        description="Gate: the share of sampled answers that do not read as clinical text (to the base model) may rise "
        "at most this much.",
    )
    eval_probe_prompts: int = Field(16, description="Probe prompts sampled to estimate KL (32 tokens each).")

    # --- safety ---
    redact_phi: bool = Field(
        True,
        description="Replace personal identifiers with typed placeholders before storing: cued names, record and NHS "
        "numbers, phones, emails, addresses, SSNs, dates of birth, admission and discharge, ages over 89, Medicare (MBI), "
        "NPI and card numbers, IP addresses and identifying URLs (docs/safety.md lists what is covered).",
    )
    redteam_prompts: int = Field(
        6, description="Adversarial and benign red-team prompts (each) answered by every new version before publishing."
    )
    gate_max_safety_drop: float = Field(
        0.2,
        description="Gate: the red-team safe-answer rate may fall, and the benign over-refusal rate rise, at most this much.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Detail of the console log (debug also shows third-party warnings)."
    )
    seed: int = Field(0, description="Seed for training and the replay sample.")

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        problems: list[str] = []
        if self.retrain_threshold < 1:
            problems.append(f"--retrain-threshold must be at least 1 (got {self.retrain_threshold})")
        if self.replay_size < 0:
            problems.append(f"--replay-size must be 0 or more (got {self.replay_size})")
        if not 0 < self.port < 65536:
            problems.append(f"--port must be between 1 and 65535 (got {self.port})")
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            problems.append(f"--candidates must be between 1 and {MAX_CANDIDATES} (got {self.candidates})")
        if self.best_of and not (self.candidates < self.best_of <= MAX_BEST_OF):
            problems.append(f"--best-of must be 0 (off) or more than --candidates and at most {MAX_BEST_OF} (got {self.best_of})")
        if self.best_of and (self.temperature == 0 or self.reward_model != "on"):
            problems.append("--best-of samples several answers and ranks them by the reward model: it needs --temperature > 0 and --reward-model on")
        if self.candidates > 1 and self.temperature == 0:
            problems.append("--candidates above 1 needs sampling (--temperature > 0): greedy candidates would be identical")
        if self.beta <= 0:
            problems.append(f"--beta must be positive (got {self.beta})")
        if not 0 <= self.holdout_fraction < 1:
            problems.append(f"--holdout-fraction must be in [0, 1) (got {self.holdout_fraction})")
        if min(self.gate_max_accuracy_drop, self.gate_max_perplexity_rise, self.gate_max_logprob_drop) < 0:
            problems.append("gate tolerances (--gate-max-accuracy-drop, -perplexity-rise, -logprob-drop) must be 0 or more")
        if not all(0 <= x <= 1 for x in (self.gate_max_loop_rise, self.gate_max_unfinished_rise, self.gate_max_unclear_rise)):
            problems.append("--gate-max-loop-rise, --gate-max-unfinished-rise and --gate-max-unclear-rise must be in [0, 1]")
        if self.gate_kl_budget <= 0:
            problems.append(f"--gate-kl-budget must be positive (got {self.gate_kl_budget})")
        if self.sft_loss_floor < 0:
            problems.append(f"--sft-loss-floor must be 0 or more (got {self.sft_loss_floor})")
        if self.redteam_prompts < 0:
            problems.append(f"--redteam-prompts must be 0 or more (got {self.redteam_prompts})")
        if not 0 <= self.gate_max_safety_drop <= 1:
            problems.append(f"--gate-max-safety-drop must be in [0, 1] (got {self.gate_max_safety_drop})")
        if self.gate_min_pairs < 1 or self.eval_probe_prompts < 1:
            problems.append("--gate-min-pairs and --eval-probe-prompts must be at least 1")
        if self.temperature < 0:
            problems.append(f"--temperature must be 0 or more (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p must be in (0, 1] (got {self.top_p})")
        if self.max_batch < 1:
            problems.append(f"--max-batch must be at least 1 (got {self.max_batch})")
        if self.vllm_max_loaded < 1:
            problems.append(f"--vllm-max-loaded must be at least 1 (got {self.vllm_max_loaded})")
        if self.serve_backend == "vllm":
            if self.vllm_url is not None and not self.vllm_url.startswith(("http://", "https://")):
                problems.append(f"--vllm-url must start with http:// or https:// (got {self.vllm_url!r})")
            if self.vllm_url is None and not self.vllm_python.is_file():
                problems.append(
                    f"--serve-backend vllm starts vLLM from {self.vllm_python}, which does not exist: run "
                    "`make vllm-env`, pass --vllm-python, or connect to a running server with --vllm-url"
                )
        elif self.vllm_url is not None:
            problems.append("--vllm-url needs --serve-backend vllm")
        if self.reviews_per_item < 1:
            problems.append(f"--reviews-per-item must be at least 1 (got {self.reviews_per_item})")
        if not 0.5 < self.consensus_threshold <= 1:
            problems.append(
                f"--consensus-threshold must be above 0.5 and at most 1 (got {self.consensus_threshold}): "
                "at 0.5 or below, two opposite judgements could both be a majority"
            )
        if self.pregenerate < 0:
            problems.append(f"--pregenerate must be 0 or more (got {self.pregenerate})")
        if self.round_budget_s < 0:
            problems.append(f"--round-budget-s must be 0 or more (got {self.round_budget_s})")
        if self.serve_threads < 0 or self.trainer_threads < 1:
            problems.append("--serve-threads must be 0 or more and --trainer-threads at least 1")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            problems.append("LoRA needs --lora-r >= 1, --lora-alpha >= 1 and 0 <= --lora-dropout < 1")
        if not self.lora_target_modules:
            problems.append("--lora-target-modules must name at least one module")
        if min(self.learning_rate, self.num_epochs, self.preference_epochs, self.preference_learning_rate, self.reward_epochs, self.reward_learning_rate, self.rl_learning_rate) <= 0 or self.rl_prompts < 1 or self.rl_generations < 2 or self.rl_max_new_tokens < 1 or self.rl_beta < 0 or self.train_batch_size < 1 or self.max_seq_length < 16:
            problems.append(
                "training needs --learning-rate, --num-epochs, --preference-epochs, --preference-learning-rate, --reward-epochs, --reward-learning-rate > 0, --rl-prompts >= 1, --rl-generations >= 2, --rl-max-new-tokens >= 1, --rl-beta >= 0, --rl-learning-rate > 0, --train-batch-size >= 1, --max-seq-length >= 16"
            )
        if self.train_processes < 1:
            problems.append(f"--train-processes must be at least 1 (got {self.train_processes})")
        elif self.train_processes > 1 and self.train_launcher != "accelerate":
            problems.append("--train-processes above 1 needs --train-launcher accelerate")
        elif self.train_batch_size % self.train_processes:
            problems.append(
                f"--train-batch-size ({self.train_batch_size}) must be a multiple of --train-processes "
                f"({self.train_processes}): each process takes an equal share of every batch"
            )
        if self.accelerate_config is not None:
            if self.train_launcher != "accelerate":
                problems.append("--accelerate-config needs --train-launcher accelerate")
            elif not self.accelerate_config.is_file():
                problems.append(f"--accelerate-config {self.accelerate_config} is not a file")
        if self.train_method == "rl" and self.reward_model != "on":
            problems.append("--train-method rl learns against the reward model: it needs --reward-model on")
        cuda = _cuda_available()
        if self.device == "cuda" and not cuda:
            problems.append("--device cuda was asked for, but this machine has no usable CUDA device")
        if self.load_in_4bit and not (cuda and self.device != "cpu"):
            problems.append("--load-in-4bit needs a CUDA device (bitsandbytes nf4)")
        if self.serve_dtype != "auto" and (self.load_in_4bit or (self.device != "cpu" and cuda)):
            problems.append(
                f"--serve-dtype {self.serve_dtype} applies to CPU serving only; on CUDA (and with --load-in-4bit) "
                "the model is served in bf16: leave it at auto"
            )
        try:
            users = self.users()
        except ValueError as exc:
            problems.append(str(exc))
            users = []
        if self.share and not users:
            problems.append(
                "--share would open a public link with no login; add --auth USER:PASS or --auth-file users.json"
            )
        if problems:
            raise ValueError("invalid settings:\n  - " + "\n  - ".join(problems))
        return self

    def users(self) -> list[User]:
        """Every login from ``--auth`` and ``--auth-file``.

        Raises:
            ValueError: a malformed ``--auth`` entry, an unreadable or malformed auth file, or a
                username given twice.
        """
        users = [_parse_auth(entry) for entry in self.auth]
        if self.auth_file is not None:
            users.extend(_read_auth_file(self.auth_file))
        names = [u.username for u in users]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"username given more than once: {', '.join(repeated)}")
        return users

    # Named ``*_config`` because ``settings.gate`` is already the --gate flag itself.
    @property
    def serving_config(self) -> ServingConfig:
        """The settings that answering questions reads."""
        return self._section(ServingConfig)

    @property
    def training_config(self) -> TrainingConfig:
        """The settings that a training round reads."""
        return self._section(TrainingConfig)

    @property
    def team_config(self) -> TeamConfig:
        """The settings that team review (queue, overlap, consensus, rubric) reads."""
        return self._section(TeamConfig)

    @property
    def evaluation_config(self) -> EvaluationConfig:
        """The settings that the evaluation of a new version reads."""
        return self._section(EvaluationConfig)

    @property
    def gate_config(self) -> GateConfig:
        """The settings that the promotion gate reads."""
        return self._section(GateConfig)

    def _section(self, section: type[SectionT]) -> SectionT:
        # A section's fields are named as the flags they come from, so its field list is the copy list.
        return section.model_validate({name: getattr(self, name) for name in section.model_fields})

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda``: what ``--device auto`` means on this machine."""
        return resolve_device(self.device)


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda``: what a ``--device`` value (``auto``, ``cpu``, ``cuda``) means on this machine."""
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return device


def _cuda_available() -> bool:
    # Imported here so that `main.py --help` and settings errors do not pay for importing torch
    # when the environment says there is nothing to look for.
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    import torch

    return torch.cuda.is_available()


def _parse_auth(entry: str) -> User:
    user, sep, rest = entry.partition(":")
    if not sep or not user or not rest:
        raise ValueError(f"--auth {entry.split(':')[0]}:... must look like USER:PASS or USER:PASS:ROLE")
    password, role = rest, "clinician"
    head, sep, tail = rest.rpartition(":")
    if sep and tail in ROLES and head:
        password, role = head, tail
    return User(username=user, password=password, role=role)


def _read_auth_file(path: Path) -> list[User]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"--auth-file {path} cannot be read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"--auth-file {path} is not valid JSON: {exc}") from exc
    entries = data.get("users") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'--auth-file {path} must hold {{"users": [{{"username": .., "password": ..}}, ...]}}')
    users = []
    for i, entry in enumerate(entries):
        try:
            users.append(User.model_validate(entry))
        except ValidationError as exc:  # reworded for the file's author, without the entry: it holds a password
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"--auth-file {path}: user #{i + 1} is invalid: {problems}") from exc
    return users


def describe_settings_error(exc: Exception) -> str:
    """One readable message for a settings failure, naming each bad flag.

    Args:
        exc: the ``pydantic.ValidationError`` (or other exception) raised while building Settings.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = [str(part) for part in err.get("loc", ()) if part != "__root__"]
        flag = "--" + "-".join(loc).replace("_", "-") if loc else ""
        lines.append(f"{flag}: {message}" if flag else message)
    return "\n".join(lines)
