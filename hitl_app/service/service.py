"""HITLService: the one API behind both the UI and the named HTTP endpoints.

It validates every request, records generations and judgements in the store (durably, before
returning), triggers the background trainer every ``retrain_threshold`` judgements, and exposes
status, versions, and activation. Reviewers and roles always come from the login, passed in by
the caller from the server-side request, never from request data.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Iterator

from ..core.config import MAX_CANDIDATES, Settings
from ..core.errors import PermissionDeniedError, UserError, check_text
from ..comparison.stats import bradley_terry, compare_summary
from ..comparison.votes import ComparisonSetup, ComparisonStore, vote_outcomes, vote_ranking
from ..evaluation.gate import gate_summary
from ..feedback.ledger import FeedbackLedger
from ..serving.manager import ModelManager, StreamUpdate
from ..feedback.ranking import parse_order
from ..versions.registry import Registry
from ..safety.checker import SafetyChecker, describe_flags
from ..feedback.records import BASE_VERSION, Feedback, Generation, SafetyFlag, has_high
from ..feedback.store import FeedbackStore
from ..evaluation.style_checks import StyleCheck, StyleChecks, adoption, make_check
from ..training.worker import TrainerClient

log = logging.getLogger(__name__)

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


class HITLService:
    """Ask, judge, retrain, inspect and activate.

    Args:
        settings: the app's settings.
        store: the feedback store.
        models: the model manager serving answers.
        registry: the checkpoint registry.
        trainer: the handle on the background trainer process.
        safety: the input, answer and medication checks (the shipped tables by default).
    """

    def __init__(
        self,
        settings: Settings,
        store: FeedbackStore,
        models: ModelManager,
        registry: Registry,
        trainer: TrainerClient,
        safety: SafetyChecker | None = None,
    ) -> None:
        self.settings = settings
        self.safety = safety or SafetyChecker()
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

    # ----- asking -----
    def candidates_for(self, candidates: int | None) -> int:
        """How many candidates to sample: the request's number, else ``--candidates``.

        Raises:
            UserError: the number is out of range, or above 1 while decoding is greedy.
        """
        k = self.settings.candidates if candidates is None else candidates
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CANDIDATES:
            raise UserError(f"candidates must be a whole number from 1 to {MAX_CANDIDATES} (got {candidates!r})")
        if k > 1 and not self.models.sampling.do_sample:
            raise UserError("several candidates need sampling, but this app decodes greedily (--temperature 0)")
        return k

    def ask(self, prompt: str, caller: Caller, candidates: int | None = None) -> Generation:
        """Answer a question with one or more candidates and record the generation.

        A question the input guard refuses is not put to the model: the refusal is recorded as
        the answer, flagged, so clinicians can still judge it.

        Raises:
            UserError: the prompt is empty or too long, or the number of candidates is invalid.
        """
        k = self.candidates_for(candidates)
        refused = self._refused(prompt, caller)
        if refused is not None:
            return refused
        return self._record_generation(prompt, self.models.generate(prompt, k=k), caller)

    def ask_stream(
        self, prompt: str, caller: Caller, candidates: int | None = None
    ) -> Iterator[tuple[list[str], str, Generation | None]]:
        """Stream candidates as (texts so far, version, None), ending with the recorded generation.

        Raises:
            UserError: the prompt is empty or too long, or the number of candidates is invalid.
        """
        k = self.candidates_for(candidates)
        refused = self._refused(prompt, caller)
        if refused is not None:
            yield refused.candidates, refused.version, refused
            return
        update: StreamUpdate
        for update in self.models.stream(prompt, k=k):
            if update.answer is None:
                yield update.texts, update.version, None
            else:
                yield update.texts, update.version, self._record_generation(prompt, update.answer, caller)

    def _screen(self, prompt: str):
        """The input guard's verdict on a question that is well-formed text.

        Raises:
            UserError: the question is empty, not text, or holds broken Unicode or control characters.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("the question is empty")
        return self.safety.check_input(check_text(prompt, "the question"))

    def _refused(self, prompt: str, caller: Caller) -> Generation | None:
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
        )

    def _record_generation(self, prompt: str, answer, caller: Caller) -> Generation:
        return self._store_generation(
            caller,
            prompt,
            answer.candidates,
            version=answer.version,
            sampling=answer.sampling,
            prompt_tokens=answer.prompt_tokens,
            flags=[self.safety.check_answer(prompt, text) for text in answer.candidates],
        )

    def _store_generation(self, caller: Caller, prompt: str, candidates: list[str], **fields) -> Generation:
        """Redact identifiers (``--redact-phi``), then append the generation durably."""
        texts, redactions = self._redact([prompt, *candidates])
        generation = Generation(
            reviewer=caller.username,
            prompt=texts[0],
            system_prompt=self.models.system_prompt,
            candidates=texts[1:],
            redactions=redactions,
            **fields,
        )
        self.store.append(generation)
        self.ledger.refresh()
        return generation

    def _redact(self, texts: list[str]) -> tuple[list[str], dict[str, int]]:
        if not self.settings.redact_phi:
            return texts, {}
        return self.safety.redact_many(texts)

    # ----- judging -----
    def accept(
        self, generation_id: str, caller: Caller, candidate: int = 0, override_reason: str | None = None
    ) -> Feedback:
        """Record that the answer is right as it stands.

        Raises:
            UserError: the answer has a high-severity safety flag and no override reason is given.
        """
        gen = self.ledger.generation(generation_id)
        self._check_candidate(gen, candidate)
        override = self._override(gen.flags_of(candidate), override_reason, "accept this answer")
        return self._judge(generation_id, caller, action="accept", candidate=candidate, override_reason=override)

    def edit(
        self, generation_id: str, text: str, caller: Caller, candidate: int = 0, override_reason: str | None = None
    ) -> Feedback:
        """Record a corrected answer; the edit is checked like an answer before it is saved.

        Raises:
            UserError: the edit is empty, or identical to the answer (accept it instead), or it
                has a high-severity safety flag and no override reason is given.
        """
        if not isinstance(text, str) or not text.strip():
            raise UserError("the edited answer is empty")
        check_text(text, "the edit")
        gen = self.ledger.generation(generation_id)
        self._check_candidate(gen, candidate)
        if text.strip() == gen.candidates[candidate].strip():
            raise UserError("the edit is identical to the answer; use Accept instead")
        flags = [*self.safety.check_answer(gen.prompt, text), *self._unclear(gen.prompt, text)]
        override = self._override(flags, override_reason, "save this edit")
        return self._judge(
            generation_id, caller, action="edit", candidate=candidate, text=text, flags=flags, override_reason=override
        )

    def _unclear(self, prompt: str, text: str) -> list[SafetyFlag]:
        """A flag when an edit does not read as clinical text to the base model (``clinical_text``)."""
        nll, judge = self.models.clinical_text_nll(prompt, text)
        if judge.reads_as_clinical(nll):
            return []
        return [SafetyFlag(kind="unclear_text", severity="high", explanation=judge.describe(nll))]

    @staticmethod
    def _override(flags: list[SafetyFlag], reason: str | None, what: str) -> str | None:
        """The override reason to store: required when a flag is high-severity, else kept if given."""
        if reason is not None:
            reason = check_text(reason, "the override reason").strip() or None
        if has_high(flags) and reason is None:
            raise UserError(f"to {what}, give an override reason: it has high-severity safety flags ({describe_flags(flags)})")
        return reason

    def reject(self, generation_id: str, reason: str, caller: Caller, candidate: int = 0) -> Feedback:
        """Record that the answer is unacceptable, and why.

        Raises:
            UserError: the reason is empty.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise UserError("a rejection needs a reason")
        check_text(reason, "the reason")
        return self._judge(generation_id, caller, action="reject", candidate=candidate, reason=reason)

    def rank(self, generation_id: str, order: list | str, caller: Caller) -> Feedback:
        """Record a ranking of a generation's candidates, best first.

        ``order`` lists candidate indices best to worst; tied candidates share a nested list
        (``[2, [0, 1]]``) or are joined by ``=`` in the string form (``"2 > 0 = 1"``). An empty
        list or ``"none"`` means every candidate is unacceptable.

        Raises:
            UserError: the generation has a single candidate, or the ranking has a duplicate or
                out-of-range index, or does not name every candidate.
        """
        gen = self.ledger.generation(generation_id)
        ranking = parse_order(order, len(gen.candidates))
        return self._judge(generation_id, caller, action="rank", ranking=ranking)

    # ----- blind A/B comparison -----
    def set_comparison(self, a: str, b: str, caller: Caller) -> ComparisonSetup:
        """Choose the two versions to compare blind (admin only).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            NotFoundError: a version does not exist.
            UserError: the two are the same version.
        """
        self._require_admin(caller, "choose the versions to compare")
        for version in (a, b):
            if not self.registry.exists(version):
                self.registry.adapter_dir(version)  # raises NotFoundError naming the versions there are
        if a == b:
            raise UserError(f"compare two different versions (both are {a})")
        return self.comparisons.set(a, b, caller.username)

    def comparison(self) -> ComparisonSetup:
        """The pair under comparison: the admin's choice, else the serving version against the newest other.

        Raises:
            UserError: there is only one version, so nothing to compare.
        """
        chosen = self.comparisons.get()
        if chosen is not None and self.registry.exists(chosen.a) and self.registry.exists(chosen.b):
            return chosen
        serving = self.models.version
        others = [v for v in [BASE_VERSION, *self.registry.versions()] if v != serving]
        if not others:
            raise UserError("there is only one version; train one before comparing")
        return ComparisonSetup(a=serving, b=others[-1], set_by="default")

    def compare(self, prompt: str, caller: Caller) -> Generation:
        """Both versions of the pair answer ``prompt``; record them in random left/right order.

        Raises:
            UserError: the prompt is empty or too long, or there is nothing to compare.
        """
        verdict = self._screen(prompt)
        if not verdict.allowed:
            raise UserError(f"this question is not put to the versions: {verdict.reason}")
        pair = self.comparison()
        versions = [pair.a, pair.b]
        self._rng.shuffle(versions)
        answers = [self.models.generate(prompt, version=v) for v in versions]
        texts = [a.candidates[0] for a in answers]
        return self._store_generation(
            caller,
            prompt,
            texts,
            version=self.models.version,
            purpose="compare",
            candidate_versions=versions,
            sampling=answers[0].sampling,
            prompt_tokens=answers[0].prompt_tokens,
            flags=[self.safety.check_answer(prompt, text) for text in texts],
        )

    def vote(self, generation_id: str, vote: str, caller: Caller) -> Feedback:
        """Record a blind vote on a comparison: ``left``, ``right``, ``tie`` or ``both_bad``.

        Raises:
            UserError: an unknown vote, or the generation is not a comparison.
        """
        ranking = vote_ranking(vote)
        if self.ledger.generation(generation_id).purpose != "compare":
            raise UserError("this generation is not an A/B comparison; judge it with accept, edit, reject or rank")
        return self._judge(generation_id, caller, action="vote", ranking=ranking)

    def comparison_results(self) -> dict:
        """The A/B results of the pair under comparison, and Bradley-Terry strengths over all votes."""
        self.ledger.refresh()
        votes = vote_outcomes(self.ledger.judgements())
        try:
            pair = self.comparison()
        except UserError:
            return {"a": None, "b": None, "votes": len(votes), "rows": [], "ratings": {}}
        summary = compare_summary(votes, pair.a, pair.b)
        ratings = bradley_terry(votes) if votes else None
        return {
            "a": pair.a,
            "b": pair.b,
            "votes": summary.counts.total,
            "rows": [list(row) for row in summary.rows()],
            "win_rate": summary.win_rate,
            "ci": [summary.ci.low, summary.ci.high],
            "p_value": summary.p_value,
            "decision": summary.decision,
            "ratings": ratings.elo if ratings else {},
        }

    def _check_candidate(self, gen: Generation, candidate: int) -> None:
        if isinstance(candidate, bool) or not isinstance(candidate, int):
            raise UserError(f"candidate must be a whole number (the candidate's index), not {candidate!r}")
        if not 0 <= candidate < len(gen.candidates):
            raise UserError(f"candidate {candidate} does not exist; this generation has {len(gen.candidates)}")

    def _judge(self, generation_id: str, caller: Caller, **fields) -> Feedback:
        gen = self.ledger.generation(generation_id)
        self._check_candidate(gen, fields.get("candidate", 0))
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
        self.ledger.refresh()
        log.info("%s: %s on %s (%s)", caller.username, feedback.action, gen.id, gen.version)
        self._maybe_retrain()
        return feedback

    # ----- the loop -----
    def since_last_version(self) -> int:
        """Judgements recorded since the newest published version's training data."""
        return self.ledger.count(after=self.registry.consumed_cursor())

    def _maybe_retrain(self) -> None:
        if self.settings.auto_retrain and self.since_last_version() >= self.settings.retrain_threshold:
            if self.trainer.request("auto"):
                log.info("retrain triggered after %d judgements", self.since_last_version())

    def retrain(self, caller: Caller) -> dict:
        """Start a round now (admin only).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: a round is already running.
        """
        self._require_admin(caller, "start a retrain")
        if not self.trainer.request(caller.username):
            raise UserError("a retrain is already running; wait for it to finish")
        return {"queued": True, "requested_by": caller.username, "new_judgements": self.since_last_version()}

    def activate(self, version: str, caller: Caller, force: bool = False) -> dict:
        """Serve ``version`` (any published version, or ``base``) from now on (admin only).

        A version the promotion gate held back is served only with ``force``, and the activation
        is then recorded as forced.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            NotFoundError: the version does not exist.
            UserError: the version was held back and ``force`` is not set.
        """
        self._require_admin(caller, "activate a version")
        # An unknown version is refused by set_active below, with the list of versions there are.
        held_back = version != BASE_VERSION and self.registry.exists(version) and self.registry.manifest(version).held_back
        if held_back and not force:
            raise UserError(
                f"{version} was held back by the promotion gate ({gate_summary(self.registry.manifest(version))}); "
                "force the activation to serve it anyway"
            )
        previous = self.models.version
        reason = f"activated by admin (was {previous})" + ("; forced past the promotion gate" if held_back else "")
        self.registry.set_active(version, by=caller.username, reason=reason, forced=held_back)
        self.models.activate(version)
        return {"serving_version": self.models.version, "previous_version": previous, "forced": held_back}

    # ----- taught styles -----
    def set_style_check(self, name: str, pattern: str, caller: Caller, regex: bool = False) -> list[StyleCheck]:
        """Add or replace a style check (admin only); returns every check.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: a blank name or pattern, or a regular expression that does not compile.
        """
        self._require_admin(caller, "define style checks")
        for value, what in ((name, "the style's name"), (pattern, "the style's pattern")):
            if not isinstance(value, str):
                raise UserError(f"{what} must be text, not {type(value).__name__}")
            check_text(value, what)
        return self.style_checks.put(make_check(name, pattern, bool(regex)))

    def remove_style_check(self, name: str, caller: Caller) -> list[StyleCheck]:
        """Remove a style check (admin only); returns the remaining checks.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: there is no check of that name.
        """
        self._require_admin(caller, "remove style checks")
        return self.style_checks.remove(name)

    def style_adoption(self) -> list[dict]:
        """For every style check, the share of each version's sample answers that show it."""
        return adoption(self.registry.manifests(), self.style_checks.all())

    def _require_admin(self, caller: Caller, what: str) -> None:
        if not caller.is_admin:
            raise PermissionDeniedError(f"only an admin may {what}; {caller.username} is a {caller.role}")

    # ----- reading -----
    def status(self) -> dict:
        """Serving version, feedback counts, trainer state and versions, for the UI and /status."""
        self.ledger.refresh()
        trainer = self.trainer.status()
        since = self.since_last_version()
        return {
            "serving_version": self.models.version,
            "feedback_total": self.ledger.count(),
            "generations_total": self.ledger.generations_total,
            "corrupt_lines": len(self.ledger.corrupt),
            "since_last_version": since,
            "retrain_threshold": self.settings.retrain_threshold,
            "until_next_retrain": max(0, self.settings.retrain_threshold - since),
            "auto_retrain": self.settings.auto_retrain,
            "trainer": {
                "state": trainer.state,
                "progress": trainer.progress,
                "message": trainer.message,
                "last_error": trainer.last_error,
                "last_version": trainer.last_version,
            },
            "versions": [BASE_VERSION, *self.registry.versions()],
            "fast_path": self.models.fast.describe() if self.models.fast is not None else None,
        }

    def versions(self) -> list[dict]:
        """One row per version with its manifest figures, newest first, the serving one marked."""
        serving = self.models.version
        rows = []
        for m in reversed(self.registry.manifests()):
            counts, pref = m.metrics.rows, m.metrics.preference
            rows.append(
                {
                    "version": m.version,
                    "serving": m.version == serving,
                    "parent": m.parent,
                    "created_at": m.created_at.isoformat(timespec="seconds"),
                    "new_judgements": len(m.new_record_ids),
                    "sft_rows": counts.get("sft", 0),
                    # Only the kind the preference stage trained on: the other kind was built but not used.
                    "dpo_rows": counts.get("dpo", 0) if pref and pref.method == "dpo" else None,
                    "kto_rows": counts.get("kto_desirable", 0) + counts.get("kto_undesirable", 0)
                    if pref and pref.method == "kto"
                    else None,
                    "dropped_pairs": counts.get("dropped_identical_pairs", 0),
                    "loss_before": m.metrics.train_loss_before,
                    "loss_after": m.metrics.train_loss_after,
                    "preference_method": pref.method if pref else None,
                    "preference_loss": pref.loss if pref else None,
                    "reward_accuracy": pref.reward_accuracy if pref else None,
                    "reward_margin": pref.reward_margin if pref else None,
                    "kl": pref.kl if pref else None,
                    "duration_s": m.metrics.duration_s,
                    "status": "serving" if m.version == serving else ("held back" if m.held_back else "ready"),
                    "gate": gate_summary(m),
                    **_evaluation_row(m),
                }
            )
        rows.append(
            {"version": BASE_VERSION, "serving": serving == BASE_VERSION, "parent": None,
             "status": "serving" if serving == BASE_VERSION else "ready"}
        )
        return rows


def _evaluation_row(manifest) -> dict:
    """The evaluation figures of a version, as Versions-table columns."""
    e = manifest.evaluation
    if e is None:
        return {}
    return {
        "heldout_pairs": e.heldout_pairs,
        "heldout_accuracy": e.heldout_accuracy,
        "edit_logprob": e.edit_logprob,
        "perplexity": e.perplexity,
        "kl_base": e.kl_base,
        "kl_serving": e.kl_serving,
        "answer_tokens": e.mean_answer_tokens,
        "safe_rate": e.safe_rate,
        "over_refusal_rate": e.over_refusal_rate,
        "medication_flag_rate": e.medication_flag_rate,
        "eval_s": e.duration_s,
    }
