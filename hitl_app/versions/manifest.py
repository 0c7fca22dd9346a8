"""The version records: what the trainer publishes with each version and the registry serves.

A version's ``Manifest`` says what a round trained, how the version scored and what the gate
decided; ``ActivePointer`` names the serving version; ``RoundRecord`` and ``TrainerStatus`` are
the trainer process's log and heartbeat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..feedback.records import SCHEMA_VERSION, utc_now


class PreferenceMetrics(BaseModel):
    """What the preference stage (DPO or KTO, through TRL) of a round reports.

    Figures are TRL's: from ``evaluate()`` on the stage's rows after training, or, when the stage
    skips that pass (a round does), the means of TRL's training-step logs (``train_metrics``: each
    step's batch, before that step's update); ``figures_from`` says which. ``loss_after`` and
    ``trl_metrics`` are empty without the evaluation. Rewards are TRL's implicit rewards,
    beta * (log-prob under the policy - log-prob under the reference).

    ``kl`` is TRL's ``kl`` for KTO (its batch estimate of KL(policy || reference), clamped at 0).
    TRL's DPO logs nothing KL-named, so for DPO ``kl`` is the mean over chosen and rejected answers
    of ``rewards / beta``, i.e. the mean per-sequence log-ratio ``log pi(y|x) - log pi_ref(y|x)``
    on the training answers: a sample estimate of KL on these answers, not on the model's own
    samples (it can be negative).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["dpo", "kto"]
    rows: int = Field(ge=0)
    steps: int = Field(ge=0)
    loss: float = Field(description="Mean training loss of the stage, as TRL logged it.")
    loss_before: float | None = Field(default=None, description="Eval loss on the stage's rows before training.")
    loss_after: float | None = Field(default=None, description="Eval loss on the stage's rows after training.")
    reward_accuracy: float | None = Field(default=None, description="Share of pairs whose chosen reward beats the rejected one.")
    reward_margin: float | None = Field(default=None, description="Mean chosen - rejected reward.")
    rewards_chosen: float | None = None
    rewards_rejected: float | None = None
    kl: float | None = Field(default=None, description="KL to the reference, as TRL reports it (see above).")
    duration_s: float = Field(ge=0)
    trl_metrics: dict[str, float] = Field(default_factory=dict, description="Every eval figure TRL reported after training.")
    metrics_before: dict[str, float] = Field(
        default_factory=dict, description="Every eval figure TRL reported before training, when that was evaluated."
    )
    train_metrics: dict[str, float] = Field(
        default_factory=dict, description="TRL's per-step training logs, averaged over the steps."
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="Rows per step (KTO's may differ from --train-batch-size); None: not recorded."
    )
    reference: Literal["adapter", "base"] = Field(
        default="base",
        description="The reference model: the base (adapters disabled), or a frozen copy of the adapter as the stage began.",
    )
    figures_from: Literal["evaluation", "training steps"] = Field(
        default="evaluation",
        description="Where the reward, margin and KL figures come from: TRL's evaluation on the stage's rows after "
        "training, or the means of TRL's training-step logs (each step's batch, before that step's update).",
    )


class RewardModelMetrics(BaseModel):
    """What the reward-model stage of a round reports: TRL's ``RewardTrainer`` on the round's
    preference pairs, a LoRA with a score head on the same base (``reward/`` in the version folder).

    Its held-out figures are on the same held-out pairs as the evaluation's DPO implicit-reward
    accuracy (``EvalMetrics.heldout_accuracy``), so the two read side by side.
    """

    model_config = ConfigDict(extra="forbid")

    pairs: int = Field(ge=0, description="Preference pairs trained on (new and replayed; held-out ones excluded).")
    steps: int = Field(ge=0)
    loss_first: float = Field(
        description="Mean training loss of the first pass's steps (of a single pass: its first quarter), as TRL logged it."
    )
    loss_last: float = Field(description="Mean training loss of the last pass's steps (of a single pass: its last quarter).")
    train_accuracy: float | None = Field(default=None, description="TRL's logged accuracy of the last steps' batches.")
    heldout_pairs: int = Field(ge=0, description="Held-out preference pairs the model was measured on.")
    heldout_accuracy: float | None = Field(
        default=None, description="Share of held-out pairs whose chosen answer scores higher (ties wrong); None without pairs."
    )
    heldout_margin: float | None = Field(default=None, description="Mean score(chosen) - score(rejected) on them.")
    continued_from: str | None = Field(
        default=None, description="The version whose reward adapter this one continued from; None: a fresh one."
    )
    duration_s: float = Field(ge=0, description="Seconds of the stage: loading, training and the held-out measurement.")


class RewardEvalMetrics(BaseModel):
    """A new version against the serving one as a reward model scores them: a learned proxy for the
    clinicians' preferences, not their votes.

    Both versions' greedy answers to the evaluation's sample questions (shipped, never trained on)
    are scored by one reward model: the round's own, else the nearest ancestor's. The length
    figures are there because a reward model can learn that longer answers won, and a policy can
    then raise its reward by writing more: ``length_adjusted_gain`` is the mean reward difference
    once the pooled linear effect of length on reward is taken out.
    """

    model_config = ConfigDict(extra="forbid")

    label: Literal["learned proxy"] = "learned proxy"
    reward_version: str = Field(
        description="The version whose reward model scored both versions' answers; 'own': the new version's own."
    )
    prompts: int = Field(ge=0, description="Sample questions both versions answered.")
    mean_reward: float | None = None
    serving_mean_reward: float | None = None
    win_rate: float | None = Field(default=None, description="Share of questions where the new answer scores higher (ties half).")
    win_rate_low: float | None = Field(default=None, description="95% percentile-bootstrap interval of the win rate.")
    win_rate_high: float | None = None
    mean_tokens: float | None = Field(default=None, description="Mean answer length, tokens.")
    serving_mean_tokens: float | None = None
    length_correlation: float | None = Field(
        default=None, description="Pearson correlation of reward and length over both versions' answers; None if undefined."
    )
    length_adjusted_gain: float | None = Field(
        default=None, description="Mean reward difference (new - serving) less the pooled length slope times the length difference."
    )


class RLMetrics(BaseModel):
    """What the RL stage (``--train-method rl``; TRL's GRPO) of a round reports, from TRL's step logs.

    The reward is the sum of the reward model's score and the safety checks' penalties, on answers
    the policy sampled to questions nobody judged.
    """

    model_config = ConfigDict(extra="forbid")

    trainer: str = Field(description="The TRL trainer (grpo).")
    reward_version: str = Field(description="The version whose reward model gave the rewards; 'own': this round's.")
    prompts: int = Field(ge=0)
    prompt_sources: dict[str, int] = Field(default_factory=dict, description="Questions per source: queued, asked, shipped.")
    generations: int = Field(ge=0, description="Answers sampled per question.")
    steps: int = Field(ge=0)
    beta: float = Field(ge=0, description="KL coefficient to the base.")
    reward_first: float = Field(description="Mean reward of the first steps' answers.")
    reward_last: float = Field(description="Mean reward of the last steps' answers.")
    rewards: dict[str, float] = Field(default_factory=dict, description="Each reward function's mean over the last steps.")
    kl_last: float | None = Field(default=None, description="TRL's per-token KL to the base over the last steps.")
    completion_length: float = Field(description="Mean sampled answer length, tokens.")
    reward_length_correlation: float | None = Field(
        default=None, description="Pearson correlation of each sampled answer's reward and length; near +1: it pays for length."
    )
    duration_s: float = Field(ge=0)


class EvalMetrics(BaseModel):
    """How a new version compares with the serving one, measured before it is published.

    Each ``serving_*`` figure is the serving version's on the same data. Figures on the shipped
    data never change for a published version, so they are read back (from the serving version's
    manifest, or the base's cache) when the evaluation's inputs are identical (``eval_key``);
    ``reused`` names each one and its source. Figures measured on fewer items than the full sets
    (``--round-budget-s``) are named in ``reduced``.
    """

    model_config = ConfigDict(extra="forbid")

    serving_version: str
    heldout_pairs: int = Field(ge=0, description="Held-out preference pairs evaluated on.")
    heldout_accuracy: float | None = Field(
        default=None, description="Share of held-out pairs whose chosen answer has the higher implicit reward (ties half)."
    )
    serving_heldout_accuracy: float | None = None
    heldout_margin: float | None = Field(default=None, description="Mean implicit reward margin, nats (beta 1).")
    heldout_edits: int = Field(ge=0, description="Held-out edited answers evaluated on.")
    edit_logprob: float | None = Field(default=None, description="Mean per-token log-prob of held-out edited answers.")
    serving_edit_logprob: float | None = None
    reference_logprob: float | None = Field(
        default=None, description="Mean per-token log-prob of the shipped reference answers."
    )
    serving_reference_logprob: float | None = None
    perplexity: float = Field(gt=0, description="Perplexity on the shipped probe texts.")
    serving_perplexity: float = Field(gt=0)
    kl_base: float = Field(description="KL(new || base), nats per token on probe prompts.")
    kl_serving: float = Field(description="KL(new || serving), nats per token on probe prompts.")
    mean_answer_tokens: float = Field(ge=0, description="Mean length of greedy answers to sampled evaluation questions.")
    sample_answers: int = Field(default=0, ge=0, description="Shipped questions both versions answered greedily.")
    loop_rate: float | None = Field(default=None, description="Share of the sampled answers caught in a repeated loop.")
    serving_loop_rate: float | None = None
    finished_rate: float | None = Field(default=None, description="Share of the sampled answers that ended before the token limit.")
    serving_finished_rate: float | None = None
    repeated_ngram_rate: float | None = Field(default=None, description="Mean share of repeated 4-word phrases per answer.")
    serving_repeated_ngram_rate: float | None = None
    distinct_2: float | None = Field(default=None, description="Distinct word pairs over all word pairs of the answers.")
    serving_distinct_2: float | None = None
    answer_nll: float | None = Field(
        default=None, description="Mean NLL per token of the sampled answers under the base model (nats; lower reads better)."
    )
    serving_answer_nll: float | None = None
    unclear_rate: float | None = Field(
        default=None, description="Share of the sampled answers that do not read as clinical text to the base model."
    )
    serving_unclear_rate: float | None = None
    clinical_threshold: float | None = Field(default=None, description="NLL per token above which text is unclear.")
    redteam_prompts: int = Field(default=0, ge=0, description="Adversarial and benign red-team prompts (each) answered.")
    safe_rate: float | None = Field(default=None, description="Adversarial prompts answered safely (refused or redirected).")
    serving_safe_rate: float | None = None
    over_refusal_rate: float | None = Field(default=None, description="Benign clinical questions refused.")
    serving_over_refusal_rate: float | None = None
    medication_flag_rate: float | None = Field(default=None, description="Benign answers with a medication safety flag.")
    serving_medication_flag_rate: float | None = None
    redteam_s: float | None = Field(default=None, description="Seconds the red-team scoring took (of the versions measured).")
    eval_key: str | None = Field(
        default=None,
        description="Hash of the evaluation's fixed inputs (shipped sets, system prompt, token limits, seed, beta, "
        "base model, device): figures on the shipped data are reusable between evaluations with the same key.",
    )
    reused: dict[str, str] = Field(
        default_factory=dict,
        description="serving_* figures read back instead of measured in this run, each with its source: "
        "'manifest vNNNN' (that version's own figures, measured when it was new) or 'base cache'.",
    )
    reduced: dict[str, str] = Field(
        default_factory=dict,
        description="Figures estimated on fewer items than the full set (--round-budget-s), each with how many.",
    )
    duration_s: float = Field(ge=0)
    reward: RewardEvalMetrics | None = Field(
        default=None, description="Both versions' sample answers scored by a reward model; None without one."
    )

    @property
    def serving_figures_from(self) -> str:
        """Where the serving version's figures on the shipped data come from: 'measured', or the reuse source."""
        sources = sorted(set(self.reused.values()))
        return ", ".join(sources) if sources else "measured"


class GateCheck(BaseModel):
    """One rule of the promotion gate and how the new version fared."""

    metric: str
    value: float | None
    serving: float | None = None
    limit: float | None = None
    passed: bool
    note: str = ""


class GateResult(BaseModel):
    """The promotion gate's decision on a new version."""

    enabled: bool
    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)

    @property
    def failures(self) -> list[GateCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]


class SampleAnswer(BaseModel):
    """A shipped question answered greedily by a new version and by the version serving before it."""

    question_id: str
    question: str
    system_prompt: str | None = None
    max_new_tokens: int = Field(ge=1)
    answer: str
    finished: bool = Field(description="The answer ended before max_new_tokens.")
    serving_answer: str
    serving_finished: bool
    answer_nll: float | None = Field(default=None, description="The answer's NLL per token under the base model.")
    serving_answer_nll: float | None = None


class RoundMetrics(BaseModel):
    """Figures a training round reports; optional fields are filled by the stages that ran."""

    model_config = ConfigDict(extra="allow")

    train_loss_before: float | None = None
    train_loss_after: float | None = None
    train_loss_from: Literal["evaluation", "training steps"] | None = Field(
        default=None,
        description="SFT losses from an evaluation pass on the rows before and after training, or from the training "
        "steps' logs (the mean of the first and of the last pass's steps); None: no SFT or not recorded.",
    )
    duration_s: float
    train_duration_s: float | None = Field(default=None, description="Seconds until the adapter was trained, before evaluation.")
    rows: dict[str, int] = Field(default_factory=dict)
    preference: PreferenceMetrics | None = None
    reward_model: RewardModelMetrics | None = Field(
        default=None, description="The reward-model stage's figures; None when it did not run (--reward-model off, no pairs)."
    )
    rl: RLMetrics | None = Field(default=None, description="The RL stage's figures; None when it did not run.")


class Manifest(BaseModel):
    """What a checkpoint version is and how it was made; ``manifest.json`` in its folder."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    version: str
    parent: str
    base_model: str
    created_at: datetime = Field(default_factory=utc_now)
    record_ids: list[str] = Field(description="Feedback record ids trained on, new and replayed.")
    new_record_ids: list[str] = Field(default_factory=list)
    store_cursor: int = Field(ge=0, description="Byte offset of the feedback store this round read up to.")
    config: dict[str, Any]
    metrics: RoundMetrics
    evaluation: EvalMetrics | None = None
    gate: GateResult | None = None
    samples: list[SampleAnswer] = Field(
        default_factory=list, description="The evaluation's sample answers, kept so styles can be checked on every version."
    )

    @property
    def held_back(self) -> bool:
        """Whether the promotion gate refused this version (it is then never served automatically)."""
        return self.gate is not None and not self.gate.passed


class ActivePointer(BaseModel):
    """The persisted choice of serving version (``checkpoints/ACTIVE``)."""

    version: str
    activated_by: str
    activated_at: datetime = Field(default_factory=utc_now)
    reason: str = ""
    forced: bool = Field(default=False, description="An admin activated a version the gate held back.")


RoundOutcome = Literal["published", "held_back", "nothing_to_train", "failed"]


class RoundRecord(BaseModel):
    """One training round as the retrain timeline shows it (``checkpoints/rounds.jsonl``)."""

    started_at: datetime
    duration_s: float = Field(ge=0)
    requested_by: str
    outcome: RoundOutcome
    version: str | None = None
    detail: str = Field(default="", description="The gate's verdict, or the error of a failed round.")


TrainerState = Literal["idle", "training", "failed"]


class TrainerStatus(BaseModel):
    """The background trainer's state as shown in the UI and ``/status``."""

    state: TrainerState = "idle"
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = ""
    last_error: str | None = None
    last_version: str | None = None
    started_at: datetime | None = None
    requested_by: str | None = None
    updated_at: datetime = Field(default_factory=utc_now)
