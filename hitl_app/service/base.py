"""The service's state, and what every action shares: who is asking, screening a question,
redacting and storing records durably, and starting a round when enough judgements are in."""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from dataclasses import dataclass

from ..comparison.votes import ComparisonStore
from ..core.config import Settings
from ..core.errors import PermissionDeniedError, UserError, check_text
from ..evaluation.style_checks import StyleChecks
from ..feedback.ledger import FeedbackLedger, Judgement
from ..feedback.queue import ReviewQueue
from ..feedback.records import Feedback, Generation, SafetyFlag
from ..feedback.rubric import Rubric, load_rubric
from ..feedback.store import FeedbackStore, QueueStore
from ..feedback.team import resolved_count
from ..safety.checker import SafetyChecker
from ..safety.input_guard import InputVerdict
from ..serving.manager import ModelManager
from ..serving.rewards import RewardScorer
from ..training.process import TrainerClient
from ..versions.registry import Registry
from .curation import Curation

log = logging.getLogger("hitl_app.service")

LOCAL_USER = "local"  # the reviewer recorded when the app runs on loopback without logins


@dataclass(frozen=True)
class Caller:
    """Who is making a request, as established by the login."""

    username: str
    role: str = "clinician"

    @property
    def is_admin(self) -> bool:
        """Whether the caller may retrain and activate versions."""
        return self.role == "admin"


class ServiceBase:
    """The objects the service works with, and the steps its actions share.

    Args:
        settings: the app's settings.
        store: the feedback store.
        models: the model manager serving answers.
        registry: the checkpoint registry.
        trainer: the handle on the background trainer process.
        safety: the input, answer and medication checks (the shipped tables by default).
        rewards: scores the candidates a clinician is shown with the reward model; None: no scores
            (``--reward-model off``).
    """

    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        models: ModelManager,
        registry: Registry,
        trainer: TrainerClient,
        safety: SafetyChecker | None = None,
        rewards: RewardScorer | None = None,
    ) -> None:
        self.settings = settings
        self.safety = safety or SafetyChecker()
        self.rewards = rewards
        self.store = store
        self.ledger = FeedbackLedger(store)
        self.ledger.refresh()
        self.models = models
        self.registry = registry
        self.trainer = trainer
        self.comparisons = ComparisonStore(registry.root / "COMPARE")
        self.style_checks = StyleChecks(registry.root)
        # Left/right order of A/B answers: unpredictable, so a clinician cannot learn which side is which.
        self._rng = random.SystemRandom()
        # Team review: the queue, and what the judgements say about it (kept current by sync_queue).
        self.queue = ReviewQueue(
            QueueStore(settings.feedback_dir), settings.reviews_per_item, uncertain_first=settings.uncertain_first == "on"
        )
        self.rubric: Rubric | None = load_rubric() if settings.rubric == "on" else None
        self._queue_lock = threading.RLock()
        self._item_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._queue_synced = 0  # ledger judgements applied to the queue
        self._gens_synced = 0  # ledger generations whose rewards were applied to the queue's order
        self._judged_by: defaultdict[str, set[str]] = defaultdict(set)  # reviewer -> queued items judged
        self._item_judgements: defaultdict[str, list[Judgement]] = defaultdict(list)  # item -> its judgements
        self.sync_queue()
        self.curation = Curation(
            self.ledger, self.queue, registry, settings.reviews_per_item, settings.consensus_threshold,
            settings.holdout_fraction,
        )  # fmt: skip

    # ----- recording -----
    def _screen(self, prompt: str) -> InputVerdict:
        """The input guard's verdict on a question that is well-formed text.

        Raises:
            UserError: the question is empty, not text, or holds broken Unicode or control characters.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the question is empty")
        return self.safety.check_input(check_text(prompt, "the question"))

    def _store_generation(
        self, caller: Caller, prompt: str, candidates: list[str], *, scored: bool = False, shown: int | None = None,
        by_reward: bool = False, **fields,
    ) -> Generation:
        """Redact identifiers (``--redact-phi``), score the candidates with the reward model when
        ``scored`` (on the redacted texts: what the reward model trained on), keep the ``shown`` best
        as the candidates and the rest as hidden (``--best-of``), best first also when ``by_reward``,
        then append the generation durably."""
        texts, redactions = self._redact([prompt, *candidates])
        answers, rewards = texts[1:], None
        if scored and self.rewards is not None:
            found = self.rewards.score(fields["version"], texts[0], self.models.system_prompt, answers)
            if found is not None:
                fields["reward_version"], rewards = found
        if shown is not None and (shown < len(answers) or (by_reward and rewards)):
            # The best by reward first (the sampled order without a reward model); flags follow their answers.
            order = sorted(range(len(answers)), key=lambda i: -rewards[i]) if rewards else list(range(len(answers)))
            keep, rest = order[:shown], order[shown:]
            fields["hidden"] = [answers[i] for i in rest]
            fields["hidden_rewards"] = [rewards[i] for i in rest] if rewards else None
            if fields.get("flags"):
                fields["flags"] = [fields["flags"][i] for i in keep]
            answers, rewards = [answers[i] for i in keep], [rewards[i] for i in keep] if rewards else None
        if rewards is not None:
            fields["rewards"] = rewards
        generation = Generation(
            reviewer=caller.username,
            prompt=texts[0],
            system_prompt=self.models.system_prompt,
            candidates=answers,
            redactions=redactions,
            **fields,
        )
        self.store.append(generation)
        self.ledger.refresh()
        return generation

    @property
    def rewards_on(self) -> bool:
        """Whether candidates are scored by a reward model (``--reward-model on``)."""
        return self.rewards is not None

    def sampled_for(self, k: int) -> int:
        """How many answers to sample for ``k`` shown candidates: ``--best-of`` when it is on (the
        reward model then picks the ``k`` shown), else ``k``."""
        best_of = self.settings.best_of
        return best_of if best_of > k and self.rewards is not None else k

    def _refused(self, prompt: str, caller: Caller, item_id: str | None = None) -> Generation | None:
        """The recorded refusal of a question the input guard blocks; None when it may be answered."""
        verdict = self._screen(prompt)
        if verdict.allowed:
            return None
        log.warning("%s: question refused by the input guard (%s)", caller.username, verdict.category)
        flag = SafetyFlag(kind="input_refused", severity="medium", explanation=verdict.reason)
        return self._store_generation(
            caller,
            prompt,
            [self.safety.refusal_for(verdict)],
            version=self.models.version,
            sampling=self.models.sampling,
            prompt_tokens=0,
            flags=[[flag]],
            refused=verdict.category,
            item_id=item_id,
        )

    def _redact(self, texts: list[str]) -> tuple[list[str], dict[str, int]]:
        if not self.settings.redact_phi:
            return texts, {}
        return self.safety.redact_many(texts)

    # ----- judging -----
    def _check_candidate(self, gen: Generation, candidate: int) -> None:
        if isinstance(candidate, bool) or not isinstance(candidate, int):
            raise UserError(f"candidate must be a whole number (the candidate's index), not {candidate!r}")
        if not 0 <= candidate < len(gen.candidates):
            raise UserError(f"candidate {candidate} does not exist; this generation has {len(gen.candidates)}")

    def _judge(self, generation_id: str, caller: Caller, **fields) -> Feedback:
        gen = self.ledger.generation(generation_id)
        self._check_candidate(gen, fields.get("candidate", 0))
        self._check_queued(gen, caller, fields.get("settles"))
        # Free text is redacted like generations, so training rows never see an identifier.
        keys = [k for k in ("text", "reason", "override_reason") if fields.get(k)]
        texts, redactions = self._redact([fields[k] for k in keys])
        fields.update(zip(keys, texts))
        feedback = Feedback(reviewer=caller.username, generation_id=gen.id, redactions=redactions, **fields)
        previous = self.ledger.find_same(feedback)
        if previous is not None:
            # A double-click or a retried request: acknowledge the stored record, store nothing.
            log.info("%s: repeated %s on %s ignored", caller.username, feedback.action, gen.id)
            return previous
        self.store.append(feedback)
        self.sync_queue()
        log.info("%s: %s on %s (%s)", caller.username, feedback.action, gen.id, gen.version)
        self._maybe_retrain()
        return feedback

    # ----- the queue -----
    def sync_queue(self) -> None:
        """Read new queue records and new judgements, so the queue knows who judged which item."""
        with self._queue_lock:
            self.ledger.refresh()
            self.queue.refresh()
            for gen in self.ledger.generations_from(self._gens_synced):
                self._gens_synced += 1
                self.note_rewards(gen)
            for j in self.ledger.judgements_from(self._queue_synced):
                self._queue_synced += 1
                item_id = j.feedback.settles or j.generation.item_id
                if item_id is None:
                    continue
                self._item_judgements[item_id].append(j)
                if j.feedback.settles is None:
                    self.queue.note_judged(item_id, j.feedback.reviewer)
                    self._judged_by[j.feedback.reviewer].add(item_id)

    def note_rewards(self, gen: Generation) -> None:
        """Tell the queue how close a queued item's top two candidates score (``--uncertain-first``)."""
        if gen.item_id is not None and gen.rewards is not None and len(gen.rewards) >= 2:
            top = sorted(gen.rewards, reverse=True)
            self.queue.set_uncertainty(gen.item_id, top[0] - top[1])

    def _check_queued(self, gen: Generation, caller: Caller, settles: str | None) -> None:
        """Only a reviewer who took a queued item with Next (or an admin settling it) may judge it.

        Raises:
            UserError: the caller did not take the item, or skipped it.
        """
        if gen.item_id is None or settles is not None:
            return
        self.sync_queue()
        claim = self.queue.claim_of(gen.item_id, caller.username)
        if claim is None or claim.generation_id != gen.id:
            raise UserError("these candidates belong to a queued item you have not taken: press Next to get your item")
        if self.queue.skipped(gen.item_id, caller.username):
            raise UserError("you skipped this item; press Next for another")

    # ----- the loop -----
    def since_last_version(self) -> int:
        """What the retrain threshold counts since the newest published version's training data:
        judgements, or with ``--reviews-per-item`` above 1, resolved items (and typed questions'
        judgements)."""
        after = self.registry.consumed_cursor()
        recent = self.ledger.judgements(after=after)
        k = self.settings.reviews_per_item
        if k <= 1:
            return len(recent)
        self.sync_queue()
        touched = {j.feedback.settles or j.generation.item_id for j in recent} - {None}
        relevant = [j for j in recent if (j.feedback.settles or j.generation.item_id) is None]
        for item_id in touched:
            relevant.extend(self._item_judgements[item_id])
        return resolved_count(relevant, k, self.settings.consensus_threshold, after=after)

    def _maybe_retrain(self) -> None:
        if self.settings.auto_retrain and self.since_last_version() >= self.settings.retrain_threshold:
            if self.trainer.request("auto"):
                log.info("retrain triggered after %d judgements", self.since_last_version())

    def _require_admin(self, caller: Caller, what: str) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(f"only an admin may {what}; {caller.username} is a {caller.role}")
