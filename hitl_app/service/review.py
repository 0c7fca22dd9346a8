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
