"""Blind A/B comparison: two versions answer the same question in random order, clinicians
vote without knowing which is which, and the votes are summarised with their uncertainty."""

from __future__ import annotations

from ..comparison.stats import bradley_terry, compare_summary
from ..comparison.votes import ComparisonSetup, vote_outcomes, vote_ranking
from ..core.errors import UserError
from ..feedback.records import BASE_VERSION, Feedback, Generation
from .base import Caller, ServiceBase
from .views import ComparisonResults


class ComparisonActions(ServiceBase):
    """Choosing the pair, asking both versions, voting and the results."""

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

    def comparison_results(self) -> ComparisonResults:
        """The A/B results of the pair under comparison, and Bradley-Terry strengths over all votes."""
        self.ledger.refresh()
        votes = vote_outcomes(self.ledger.judgements())
        try:
            pair = self.comparison()
        except UserError:
            return ComparisonResults(a=None, b=None, votes=len(votes), rows=[], ratings={})
        summary = compare_summary(votes, pair.a, pair.b)
        ratings = bradley_terry(votes) if votes else None
        return ComparisonResults(
            a=pair.a,
            b=pair.b,
            votes=summary.counts.total,
            rows=[list(row) for row in summary.rows()],
            win_rate=summary.win_rate,
            ci=[summary.ci.low, summary.ci.high],
            p_value=summary.p_value,
            decision=summary.decision,
            ratings=ratings.elo if ratings else {},
        )
