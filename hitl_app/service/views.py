"""What the service answers with: typed views that the UI renders and the HTTP API sends as JSON.

Each view names its fields once, with their meaning; the UI reads the same fields the API sends,
so no layer re-keys another's dict. ``to_json`` gives an endpoint's JSON object.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from ..evaluation.gate import gate_summary
from ..evaluation.style_checks import StyleCheck
from ..feedback.ledger import Judgement
from ..feedback.records import BASE_VERSION, Feedback, Generation, SafetyFlag
from ..safety.checker import flags_json
from ..serving.fastpath import FastPathState
from ..serving.vllm_models import BackendState
from ..versions.manifest import Manifest, RoundRecord, TrainerStatus


class View(BaseModel):
    """A service answer; ``to_json`` is its endpoint's JSON object."""

    model_config = ConfigDict(frozen=True)

    def to_json(self) -> Any:
        """The JSON object an endpoint returns."""
        return self.model_dump(mode="json")


class PartialView(View):
    """A view whose figures may be missing: a missing figure is left out of the JSON, not sent as null.

    A figure that exists but has no value (a preference loss when no preference stage ran) is
    set to None explicitly and is sent as null.
    """

    def to_json(self) -> Any:
        """The JSON object an endpoint returns, without the figures this record does not have."""
        return self.model_dump(mode="json", exclude_unset=True)


# ----- status -----
class TrainerView(View):
    """The background trainer's state, as the status panel and ``/status`` show it."""

    state: str = Field(description="idle, training or failed")
    progress: float = Field(description="the running round's progress, 0 to 1")
    message: str = Field(description="what the trainer is doing, or how its last round ended")
    last_error: str | None = Field(description="the last failed round's error")
    last_version: str | None = Field(description="the version the last round published")

    @classmethod
    def of(cls, status: TrainerStatus) -> TrainerView:
        """The view of the trainer's own status record: the fields it shares with it."""
        return cls.model_validate(status.model_dump(include=set(cls.model_fields)))


class ServiceStatus(View):
    """Serving version, feedback counts, trainer state and versions: the status panel and ``/status``."""

    serving_version: str = Field(description="the version answering questions now")
    feedback_total: int = Field(description="judgements in the store")
    generations_total: int = Field(description="generations in the store")
    corrupt_lines: int = Field(description="torn lines skipped in the feedback store")
    since_last_version: int = Field(description="judgements since the newest version's training data")
    retrain_threshold: int = Field(description="judgements that trigger a retrain")
    until_next_retrain: int = Field(description="judgements still needed before the next automatic retrain")
    auto_retrain: bool = Field(description="whether judgements trigger retrains")
    trainer: TrainerView = Field(description="the background trainer's state")
    versions: list[str] = Field(description="base, then every published version, oldest first")
    fast_path: FastPathState | None = Field(description="the fast decode path's state; None without one")
    vllm: BackendState | None = Field(None, description="the vLLM backend's state; None with --serve-backend local")


# ----- versions -----
class VersionRow(PartialView):
    """One version with its manifest and evaluation figures: a row of ``/versions`` and the Versions tab.

    The base row has only ``version``, ``serving``, ``parent`` and ``status``; a version trained
    without the evaluation gate has no evaluation figures.
    """

    version: str = Field(description="vNNNN or base")
    serving: bool = Field(description="whether it answers questions now")
    parent: str | None = Field(description="the version it was trained from")
    created_at: str | None = Field(None, description="when it was published, ISO 8601 to the second")
    new_judgements: int | None = Field(None, description="judgements first trained on in this version")
    sft_rows: int | None = Field(None, description="SFT training rows")
    dpo_rows: int | None = Field(None, description="DPO pairs, when the preference stage ran DPO")
    kto_rows: int | None = Field(None, description="KTO labels, when the preference stage ran KTO")
    dropped_pairs: int | None = Field(None, description="preference pairs dropped as identical")
    loss_before: float | None = Field(None, description="SFT loss before training")
    loss_after: float | None = Field(None, description="SFT loss after training")
    preference_method: str | None = Field(None, description="dpo or kto; None without a preference stage")
    preference_loss: float | None = Field(None, description="the preference stage's final loss")
    reward_accuracy: float | None = Field(None, description="the preference stage's reward accuracy")
    reward_margin: float | None = Field(None, description="the preference stage's reward margin")
    kl: float | None = Field(None, description="KL to the base, as the preference trainer logged it")
    reward_model_pairs: int | None = Field(None, description="preference pairs the version's reward model trained on")
    reward_model_accuracy: float | None = Field(
        None, description="the reward model's held-out pairwise accuracy (the same pairs as heldout_accuracy)"
    )
    reward_model_margin: float | None = Field(None, description="its mean score(chosen) - score(rejected) on them")
    reward_mean: float | None = Field(
        None, description="mean reward-model score of its sample answers (a learned proxy, not clinicians' votes)"
    )
    serving_reward_mean: float | None = Field(None, description="the same for the version serving when it was made")
    reward_win_rate: float | None = Field(None, description="share of sample questions where its answer scored higher")
    reward_win_rate_ci: str | None = Field(None, description="the win rate's 95% bootstrap interval")
    reward_length_correlation: float | None = Field(None, description="correlation of reward and answer length")
    duration_s: float | None = Field(None, description="the round's training seconds")
    status: str = Field(description="serving, held back or ready")
    gate: str | None = Field(None, description="the promotion gate's verdict in one line")
    heldout_pairs: int | None = Field(None, description="held-out preference pairs evaluated")
    heldout_accuracy: float | None = Field(None, description="held-out preference accuracy")
    edit_logprob: float | None = Field(None, description="mean log-prob per token of held-out edited answers")
    perplexity: float | None = Field(None, description="perplexity on the probe texts")
    kl_base: float | None = Field(None, description="KL(new || base) per token on the probe prompts")
    kl_serving: float | None = Field(None, description="KL(new || serving) per token on the probe prompts")
    answer_tokens: float | None = Field(None, description="mean tokens of the sample answers")
    safe_rate: float | None = Field(None, description="share of red-team prompts answered safely")
    over_refusal_rate: float | None = Field(None, description="share of benign questions refused")
    medication_flag_rate: float | None = Field(None, description="share of sample answers with a medication flag")
    eval_s: float | None = Field(None, description="the evaluation's seconds")

    @classmethod
    def of(cls, m: Manifest, serving: str) -> VersionRow:
        """The row of a published version, given the version serving now."""
        counts, pref = m.metrics.rows, m.metrics.preference
        figures: dict[str, Any] = dict(
            version=m.version,
            serving=m.version == serving,
            parent=m.parent,
            created_at=m.created_at.isoformat(timespec="seconds"),
            new_judgements=len(m.new_record_ids),
            sft_rows=counts.get("sft", 0),
            # Only the kind the preference stage trained on: the other kind was built but not used.
            dpo_rows=counts.get("dpo", 0) if pref and pref.method == "dpo" else None,
            kto_rows=counts.get("kto_desirable", 0) + counts.get("kto_undesirable", 0)
            if pref and pref.method == "kto"
            else None,
            dropped_pairs=counts.get("dropped_identical_pairs", 0),
            loss_before=m.metrics.train_loss_before,
            loss_after=m.metrics.train_loss_after,
            preference_method=pref.method if pref else None,
            preference_loss=pref.loss if pref else None,
            reward_accuracy=pref.reward_accuracy if pref else None,
            reward_margin=pref.reward_margin if pref else None,
            kl=pref.kl if pref else None,
            duration_s=m.metrics.duration_s,
            status="serving" if m.version == serving else ("held back" if m.held_back else "ready"),
            gate=gate_summary(m),
        )
        reward = m.metrics.reward_model
        if reward is not None:
            figures.update(
                reward_model_pairs=reward.pairs,
                reward_model_accuracy=reward.heldout_accuracy,
                reward_model_margin=reward.heldout_margin,
            )
        e = m.evaluation
        if e is not None and e.reward is not None and e.reward.mean_reward is not None:
            r = e.reward
            figures.update(
                reward_mean=r.mean_reward,
                serving_reward_mean=r.serving_mean_reward,
                reward_win_rate=r.win_rate,
                reward_win_rate_ci=f"{r.win_rate_low:.2f}-{r.win_rate_high:.2f}",
                reward_length_correlation=r.length_correlation,
            )
        if e is not None:
            figures.update(
                heldout_pairs=e.heldout_pairs,
                heldout_accuracy=e.heldout_accuracy,
                edit_logprob=e.edit_logprob,
                perplexity=e.perplexity,
                kl_base=e.kl_base,
                kl_serving=e.kl_serving,
                answer_tokens=e.mean_answer_tokens,
                safe_rate=e.safe_rate,
                over_refusal_rate=e.over_refusal_rate,
                medication_flag_rate=e.medication_flag_rate,
                eval_s=e.duration_s,
            )
        return cls(**figures)

    @classmethod
    def base(cls, serving: str) -> VersionRow:
        """The base model's row, given the version serving now."""
        is_serving = serving == BASE_VERSION
        return cls(version=BASE_VERSION, serving=is_serving, parent=None, status="serving" if is_serving else "ready")


# ----- admin actions -----
class RetrainReply(View):
    """A retrain queued by an admin: ``/retrain``."""

    queued: bool = Field(description="always True: a refused request raises instead")
    requested_by: str = Field(description="the admin's login")
    new_judgements: int = Field(description="judgements the round will train on for the first time")


class ActivationReply(View):
    """A version activated by an admin: ``/activate``."""

    serving_version: str = Field(description="the version serving now")
    previous_version: str = Field(description="the version that served before")
    forced: bool = Field(description="whether the activation overrode the promotion gate")


# ----- blind A/B comparison -----
class ComparisonResults(PartialView):
    """The A/B results of the pair under comparison: ``/compare_results`` and the Compare tab.

    With no pair to compare (a single version), only ``a``, ``b`` (both None), ``votes``,
    ``rows`` and ``ratings`` are set.
    """

    a: str | None = Field(description="the first version of the pair; the win rate is its")
    b: str | None = Field(description="the second version of the pair")
    votes: int = Field(description="votes between a and b (all votes when there is no pair)")
    rows: list[list[str]] = Field(description="(label, value) rows of the results table")
    win_rate: float | None = Field(None, description="a's win rate, a tie counting half")
    ci: list[float | None] | None = Field(None, description="the win rate's bootstrap 95% interval, [low, high]")
    p_value: float | None = Field(None, description="the exact sign test's p-value")
    decision: str | None = Field(None, description="the comparison's verdict in words")
    ratings: dict[str, float] = Field(description="Bradley-Terry (Elo-scaled) rating of each version voted on")


# ----- taught styles -----
class StyleAdoption(View):
    """The share of one version's sample answers that show one style."""

    version: str = Field(description="vNNNN or base")
    style: str = Field(description="the style check's name")
    adoption: float = Field(description="share of the version's sample answers that show the style")
    answers: int = Field(description="sample answers of the version")


class StylesReply(View):
    """The style checks and every version's adoption of them: ``/styles``."""

    checks: list[StyleCheck] = Field(description="the admin's style checks")
    adoption: list[StyleAdoption] = Field(description="per style and version, the share of answers that show it")


# ----- the dashboard -----
class DashboardData(View):
    """Everything the Dashboard tab plots, read once per refresh."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    # The ledger's own records, not validated again: they were validated when read from the store.
    judgements: SkipValidation[list[Judgement]] = Field(description="the ledger's judgements, in store order")
    manifests: list[Manifest] = Field(description="the published versions' manifests, oldest first")
    rounds: list[RoundRecord] = Field(description="the round log, oldest first")
    trainer: TrainerStatus = Field(description="the trainer's status now")
    kl_budget: float = Field(description="the promotion gate's KL budget (--gate-kl-budget)")
    style_adoption: list[StyleAdoption] = Field(description="per style and version, the share of answers that show it")


# ----- replies to judging -----
class AskReply(View):
    """A recorded generation: ``/ask``."""

    generation_id: str = Field(description="the id every judgement of it names")
    answer: str = Field(description="candidate 0")
    candidates: list[str] = Field(description="every candidate answer")
    version: str = Field(description="the version that wrote them")
    flags: list[list[dict]] = Field(description="each candidate's safety flags")
    refused: str | None = Field(description="the input guard's category when it refused the question")
    redactions: dict[str, int] = Field(description="identifiers redacted, per kind")
    rewards: list[float] | None = Field(
        description="each candidate's score from the serving version's reward model (a learned proxy for the "
        "clinicians' preferences, not a judgement); null when there is no reward model"
    )
    hidden: int = Field(description="--best-of: sampled answers not shown (lower by the reward model), stored with the generation")

    @classmethod
    def of(cls, gen: Generation) -> AskReply:
        """The reply for a recorded generation."""
        return cls(
            generation_id=gen.id,
            answer=gen.answer,
            candidates=gen.candidates,
            version=gen.version,
            flags=flags_json(gen),
            refused=gen.refused,
            redactions=gen.redactions,
            rewards=gen.rewards,
            hidden=len(gen.hidden),
        )


class JudgementReply(View):
    """A saved judgement: ``/accept``, ``/edit``, ``/reject`` and ``/rank``."""

    saved: bool = Field(description="always True: a refused judgement raises instead")
    feedback_id: str = Field(description="the stored record's id")
    generation_id: str = Field(description="the judged generation")
    action: str = Field(description="accept, edit, reject or rank")
    candidate: int = Field(description="the judged candidate's index")
    ranking: list[list[int]] | None = Field(description="a ranking's tie groups, best first")
    reviewer: str = Field(description="the login that judged")
    override_reason: str | None = Field(description="why a high-severity flag was overridden")
    flags: list[SafetyFlag] = Field(description="an edit's safety flags")
    since_last_version: int = Field(description="judgements since the newest version's training data")

    @classmethod
    def of(cls, fb: Feedback, since_last_version: int) -> JudgementReply:
        """The reply for a stored judgement."""
        return cls(
            saved=True,
            feedback_id=fb.id,
            generation_id=fb.generation_id,
            action=fb.action,
            candidate=fb.candidate,
            ranking=fb.ranking,
            reviewer=fb.reviewer,
            override_reason=fb.override_reason,
            flags=fb.flags,
            since_last_version=since_last_version,
        )


class CompareReply(View):
    """Both versions' answers to one question, versions hidden: ``/compare``."""

    generation_id: str = Field(description="the id the vote names")
    left: str = Field(description="the left answer")
    right: str = Field(description="the right answer")
    flags: list[list[dict]] = Field(description="each side's safety flags")

    @classmethod
    def of(cls, gen: Generation) -> CompareReply:
        """The reply for a recorded comparison."""
        return cls(generation_id=gen.id, left=gen.candidates[0], right=gen.candidates[1], flags=flags_json(gen))


class VoteReply(View):
    """A saved blind vote, with the versions it revealed: ``/vote``."""

    saved: bool = Field(description="always True: a refused vote raises instead")
    feedback_id: str = Field(description="the stored record's id")
    vote: str = Field(description="left, right, tie or both_bad")
    ranking: list[list[int]] | None = Field(description="the vote as a ranking of the two sides")
    reviewer: str = Field(description="the login that voted")
    left_version: str = Field(description="the version that wrote the left answer")
    right_version: str = Field(description="the version that wrote the right answer")

    @classmethod
    def of(cls, fb: Feedback, vote: str, gen: Generation) -> VoteReply:
        """The reply for a stored vote on ``gen``."""
        return cls(
            saved=True,
            feedback_id=fb.id,
            vote=vote,
            ranking=fb.ranking,
            reviewer=fb.reviewer,
            left_version=gen.version_of(0),
            right_version=gen.version_of(1),
        )
