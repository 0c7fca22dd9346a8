"""What a clinician does in the Review tab: ask for one or more candidate answers, then accept,
edit, reject or rank them. Every action is checked and stored durably before it returns."""

from __future__ import annotations

import logging
from typing import Iterator

from ..core.config import MAX_CANDIDATES
from ..core.errors import UserError, check_text
from ..feedback.ranking import parse_order
from ..feedback.records import Feedback, Generation, SafetyFlag, has_high
from ..safety.checker import describe_flags
from ..serving.manager import StreamUpdate
from .base import Caller, ServiceBase

log = logging.getLogger("hitl_app.service")


class ReviewActions(ServiceBase):
    """Asking and judging."""

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

    def ask(self, prompt: str, caller: Caller, candidates: int | None = None, by_reward: bool = False) -> Generation:
        """Answer a question with one or more candidates and record the generation.

        A question the input guard refuses is not put to the model: the refusal is recorded as
        the answer, flagged, so clinicians can still judge it. With ``by_reward`` (and a reward
        model) the candidates are stored, and so shown, best by the reward model first.

        Raises:
            UserError: the prompt is empty or too long, or the number of candidates is invalid.
        """
        k = self.candidates_for(candidates)
        refused = self._refused(prompt, caller)
        if refused is not None:
            return refused
        answer = self.models.generate(prompt, k=self.sampled_for(k))
        return self._record_generation(prompt, answer, caller, shown=k, by_reward=by_reward)

    def ask_stream(
        self, prompt: str, caller: Caller, candidates: int | None = None, by_reward: bool = False
    ) -> Iterator[tuple[list[str], str, Generation | None]]:
        """Stream candidates as (texts so far, version, None), ending with the recorded generation
        (in the reward model's order with ``by_reward``: the last update reorders them).

        Raises:
            UserError: the prompt is empty or too long, or the number of candidates is invalid.
        """
        k = self.candidates_for(candidates)
        refused = self._refused(prompt, caller)
        if refused is not None:
            yield refused.candidates, refused.version, refused
            return
        if self.sampled_for(k) > k:
            # Which answers are shown is known only once all are scored: nothing to stream before.
            gen = self.ask(prompt, caller, k, by_reward)
            yield gen.candidates, gen.version, gen
            return
        update: StreamUpdate
        for update in self.models.stream(prompt, k=k):
            if update.answer is None:
                yield update.texts, update.version, None
            else:
                gen = self._record_generation(prompt, update.answer, caller, shown=k, by_reward=by_reward)
                yield gen.candidates, update.version, gen

    def _record_generation(
        self, prompt: str, answer, caller: Caller, shown: int | None = None, by_reward: bool = False
    ) -> Generation:
        return self._store_generation(
            caller,
            prompt,
            answer.candidates,
            version=answer.version,
            sampling=answer.sampling,
            prompt_tokens=answer.prompt_tokens,
            flags=[self.safety.check_answer(prompt, text) for text in answer.candidates],
            scored=True,
            shown=shown,
            by_reward=by_reward,
        )

    def accept(
        self,
        generation_id: str,
        caller: Caller,
        candidate: int = 0,
        override_reason: str | None = None,
        rubric: dict | None = None,
    ) -> Feedback:
        """Record that the answer is right as it stands, with optional rubric ratings (``--rubric on``).

        Raises:
            UserError: the answer has a high-severity safety flag, or rubric ratings of possible
                harm, and no override reason is given; or the ratings are invalid.
        """
        gen = self.ledger.generation(generation_id)
        self._check_candidate(gen, candidate)
        ratings = self._ratings(rubric)
        flags = [*gen.flags_of(candidate), *self._harm_flags(ratings)]
        override = self._override(flags, override_reason, "accept this answer")
        return self._judge(
            generation_id, caller, action="accept", candidate=candidate, override_reason=override, rubric=ratings
        )

    def _ratings(self, rubric: dict | None) -> dict[str, str] | None:
        """Validated rubric ratings, or None when none were given.

        Raises:
            UserError: ratings were given while the rubric is off, or they are invalid.
        """
        if rubric in (None, {}):
            return None
        if self.rubric is None:
            raise UserError("rubric ratings are off in this app (start it with --rubric on)")
        return self.rubric.check(rubric)

    def _harm_flags(self, ratings: dict[str, str] | None) -> list[SafetyFlag]:
        """A high-severity flag for ratings of likely or severe harm: accepting then needs an override reason."""
        harmful = self.rubric.harmful_ratings(ratings) if self.rubric is not None else []
        if not harmful:
            return []
        return [SafetyFlag(kind="rated_harmful", severity="high", explanation=f"rated {', '.join(harmful)}")]

    def edit(
        self,
        generation_id: str,
        text: str,
        caller: Caller,
        candidate: int = 0,
        override_reason: str | None = None,
        rubric: dict | None = None,
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
            generation_id, caller, action="edit", candidate=candidate, text=text, flags=flags,
            override_reason=override, rubric=self._ratings(rubric),
        )  # fmt: skip

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

    def reject(
        self, generation_id: str, reason: str, caller: Caller, candidate: int = 0, rubric: dict | None = None
    ) -> Feedback:
        """Record that the answer is unacceptable, and why (rubric ratings optional).

        Raises:
            UserError: the reason is empty, or the ratings are invalid.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise UserError("a rejection needs a reason")
        check_text(reason, "the reason")
        ratings = self._ratings(rubric)
        return self._judge(generation_id, caller, action="reject", candidate=candidate, reason=reason, rubric=ratings)

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
