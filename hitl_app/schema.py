"""Pydantic records: what the feedback store, the registry and the trainer exchange.

Every record written to ``feedback/feedback.jsonl`` is either a ``Generation`` (what the model
said, with the version and sampling settings that produced it) or a ``Feedback`` (a clinician's
judgement of one generation). Feedback refers to its generation by id, so every training row can
be traced to the exact answer and model version it came from.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

SCHEMA_VERSION = 1
BASE_VERSION = "base"

Action = Literal["accept", "edit", "reject", "rank", "vote"]
# Actions that carry a ranking: a clinician's ranking, and a blind A/B vote (stored as a ranking).
RANKED_ACTIONS = ("rank", "vote")


def new_id() -> str:
    """A fresh unique record id (uuid4 hex)."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id)
    created_at: datetime = Field(default_factory=utc_now)
    reviewer: str = Field(min_length=1, description="The logged-in user; never taken from the client.")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(timezone.utc)


class Sampling(BaseModel):
    """The decoding settings an answer was sampled with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_sample: bool
    temperature: float
    top_p: float
    max_new_tokens: int


Severity = Literal["high", "medium", "low"]
FlagKind = Literal[
    "overdose", "contraindication", "interaction", "missing_urgency", "phi", "input_refused", "unclear_text"
]


class SafetyFlag(BaseModel):
    """One safety finding on a text, shown next to it: what, how serious, and why in one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FlagKind
    severity: Severity
    explanation: str = Field(min_length=1)


def has_high(flags: list[SafetyFlag]) -> bool:
    """Whether any flag is high-severity (accepting such an answer needs an override reason)."""
    return any(f.severity == "high" for f in flags)


class Generation(_Record):
    """One question and the candidate answer(s) the model gave, tagged with the serving version."""

    kind: Literal["generation"] = "generation"
    prompt: str = Field(min_length=1)
    system_prompt: str | None = None
    candidates: list[str] = Field(min_length=1)
    version: str = Field(min_length=1)
    sampling: Sampling
    prompt_tokens: int = Field(ge=0)

    purpose: Literal["review", "compare"] = Field(
        default="review", description="review: the serving version's candidates; compare: a blind A/B pair."
    )
    candidate_versions: list[str] | None = Field(
        default=None, description="The version of each candidate when they differ (A/B comparisons)."
    )
    flags: list[list[SafetyFlag]] = Field(
        default_factory=list, description="Safety flags of each candidate (empty: not checked)."
    )
    refused: str | None = Field(
        default=None, description="Why the input guard refused the question (the candidate is then the refusal)."
    )
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Identifiers replaced before storage: type -> count, never the values."
    )

    def flags_of(self, candidate: int) -> list[SafetyFlag]:
        """The safety flags of candidate ``candidate`` (none if it was not checked)."""
        return self.flags[candidate] if candidate < len(self.flags) else []

    @property
    def answer(self) -> str:
        """The first (or only) candidate."""
        return self.candidates[0]

    def version_of(self, candidate: int) -> str:
        """The version that wrote candidate ``candidate``."""
        return self.candidate_versions[candidate] if self.candidate_versions else self.version

    @model_validator(mode="after")
    def _versions_fit_candidates(self) -> "Generation":
        if self.candidate_versions is not None and len(self.candidate_versions) != len(self.candidates):
            raise ValueError("candidate_versions must name one version per candidate")
        if self.purpose == "compare" and (self.candidate_versions is None or len(self.candidates) != 2):
            raise ValueError("a comparison has exactly two candidates, each with its version")
        if self.flags and len(self.flags) != len(self.candidates):
            raise ValueError("flags must give one list per candidate")
        return self


class Feedback(_Record):
    """A clinician's judgement of one candidate of one generation."""

    kind: Literal["feedback"] = "feedback"
    generation_id: str = Field(min_length=1)
    action: Action
    candidate: int = Field(default=0, ge=0)
    text: str | None = Field(default=None, description="The corrected answer, for action 'edit'.")
    reason: str | None = Field(default=None, description="Why the answer was rejected.")
    ranking: list[list[Annotated[int, Field(ge=0)]]] | None = Field(
        default=None,
        description="For action 'rank': candidate indices in tie groups, best first; [] = all unacceptable.",
    )
    override_reason: str | None = Field(
        default=None, description="Why the clinician accepted or saved an answer despite a high-severity flag."
    )
    flags: list[SafetyFlag] = Field(default_factory=list, description="Safety flags of the edited text.")
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Identifiers replaced in the text or reason before storage."
    )

    @property
    def all_unacceptable(self) -> bool:
        """A ranking (or vote) that found every candidate unacceptable."""
        return self.action in RANKED_ACTIONS and self.ranking == []

    @model_validator(mode="after")
    def _fields_fit_action(self) -> "Feedback":
        if self.action == "edit" and not (self.text and self.text.strip()):
            raise ValueError("an edit needs the corrected text")
        if self.action != "edit" and self.text is not None:
            raise ValueError(f"'{self.action}' takes no edited text")
        if self.action == "reject" and not (self.reason and self.reason.strip()):
            raise ValueError("a rejection needs a reason")
        if self.override_reason is not None and (self.action not in ("accept", "edit") or not self.override_reason.strip()):
            raise ValueError("an override reason goes with 'accept' or 'edit', and is not empty")
        if (self.action in RANKED_ACTIONS) != (self.ranking is not None):
            raise ValueError("a ranking goes with actions 'rank' and 'vote', and only there")
        if self.ranking is not None:
            flat = [i for group in self.ranking for i in group]
            if len(flat) != len(set(flat)) or any(not group for group in self.ranking):
                raise ValueError("a ranking names each candidate once, in non-empty tie groups")
        return self


Record = Annotated[Union[Generation, Feedback], Field(discriminator="kind")]
RECORD_ADAPTER: TypeAdapter[Generation | Feedback] = TypeAdapter(Record)


class PreferenceMetrics(BaseModel):
    """What the preference stage (DPO or KTO, through TRL) of a round reports.

    Rewards are TRL's implicit rewards, beta * (log-prob under the policy - log-prob under the
    reference); the reference is the base model (the adapter disabled).
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
    kl: float | None = Field(default=None, description="KL to the reference, as TRL reports it (see the README).")
    duration_s: float = Field(ge=0)
    trl_metrics: dict[str, float] = Field(default_factory=dict, description="Every eval figure TRL reported.")


class EvalMetrics(BaseModel):
    """How a new version compares with the serving one, measured before it is published.

    Each ``serving_*`` figure is the serving version's, measured in the same run on the same data.
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
    redteam_s: float | None = Field(default=None, description="Seconds the red-team scoring of both versions took.")
    duration_s: float = Field(ge=0)


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


class RoundMetrics(BaseModel):
    """Figures a training round reports; optional fields are filled by the stages that ran."""

    model_config = ConfigDict(extra="allow")

    train_loss_before: float | None = None
    train_loss_after: float | None = None
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
