"""Pydantic records of the feedback store: what the model said and what a clinician judged.

Every record written to ``feedback/feedback.jsonl`` is either a ``Generation`` (what the model
said, with the version and sampling settings that produced it) or a ``Feedback`` (a clinician's
judgement of one generation). Feedback refers to its generation by id, so every training row can
be traced to the exact answer and model version it came from.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal, Union

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
    "overdose", "contraindication", "interaction", "missing_urgency", "phi", "input_refused", "unclear_text",
    "rated_harmful",
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
    item_id: str | None = Field(
        default=None, description="The queued item whose candidates these are (None: a question typed in Review)."
    )
    rewards: list[float] | None = Field(
        default=None,
        description="Each candidate's score from the reward model (a learned proxy, not a judgement); None: not scored.",
    )
    reward_version: str | None = Field(
        default=None, description="The version whose reward model gave the scores (the serving one or its ancestor)."
    )
    hidden: list[str] = Field(
        default_factory=list,
        description="--best-of: the sampled answers not shown, lower by the reward model (never judged, kept for training "
        "and audit).",
    )
    hidden_rewards: list[float] | None = Field(default=None, description="Their reward-model scores.")

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
        if self.rewards is not None and len(self.rewards) != len(self.candidates):
            raise ValueError("rewards must give one score per candidate")
        if (self.rewards is None) != (self.reward_version is None):
            raise ValueError("rewards and reward_version go together")
        if self.hidden_rewards is not None and len(self.hidden_rewards) != len(self.hidden):
            raise ValueError("hidden_rewards must give one score per hidden answer")
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
    settles: str | None = Field(
        default=None,
        description="An adjudication: the id of the queued item whose disagreement this judgement settles.",
    )
    rubric: dict[str, str] | None = Field(
        default=None, description="Structured ratings (--rubric on): axis name -> level name, from the rubric file."
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
