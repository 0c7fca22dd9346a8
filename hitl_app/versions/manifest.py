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
