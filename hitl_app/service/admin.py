"""What an admin does, and what the UI and the API read: retraining, activating a version,
taught styles, the team's agreement, export and audit, status, the versions table and the
dashboard's data."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError, check_text
from ..evaluation.gate import gate_summary
from ..evaluation.style_checks import StyleCheck, adoption, make_check
from ..feedback.agreement import AgreementReport
from ..feedback.export import ExportFilter, ExportKind, ExportSummary
from ..feedback.records import BASE_VERSION, Generation
from ..feedback.rubric import rating_counts
from ..serving.vllm_client import VllmError
from ..serving.vllm_models import VllmModels
from ..versions.manifest import Manifest
from .base import Caller, ServiceBase
from .team_views import AuditPage
from .views import (
    ActivationReply,
    DashboardData,
    RetrainReply,
    ServiceStatus,
    StyleAdoption,
    StylesReply,
    TrainerView,
    VersionRow,
)


class AdminActions(ServiceBase):
    """Running the loop and reading its state."""

    def retrain(self, caller: Caller) -> RetrainReply:
        """Start a round now (admin only).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: a round is already running.
        """
        self._require_admin(caller, "start a retrain")
        if not self.trainer.request(caller.username):
            raise UserError("a retrain is already running; wait for it to finish")
        return RetrainReply(queued=True, requested_by=caller.username, new_judgements=self.since_last_version())

    def activate(self, version: str, caller: Caller, force: bool = False) -> ActivationReply:
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
        try:
            self.models.activate(version)
        except VllmError as exc:  # the serving backend could not load it: ACTIVE goes back to what serves
            self.registry.set_active(previous, by=caller.username, reason=f"{version} failed to load; kept {previous}")
            raise UserError(f"{version} could not be served, so {previous} still serves: {exc}") from exc
        return ActivationReply(serving_version=self.models.version, previous_version=previous, forced=held_back)

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

    def defined_style_checks(self) -> list[StyleCheck]:
        """The admin's style checks."""
        return self.style_checks.all()

    def style_adoption(self) -> list[StyleAdoption]:
        """For every style check, the share of each version's sample answers that show it."""
        return self._adoption(self.registry.manifests())

    def styles(self) -> StylesReply:
        """The style checks and every version's adoption of them."""
        return StylesReply(checks=self.defined_style_checks(), adoption=self.style_adoption())

    def _adoption(self, manifests: list[Manifest]) -> list[StyleAdoption]:
        return [StyleAdoption(**row) for row in adoption(manifests, self.style_checks.all())]

    # ----- the team's data -----
    def agreement(self, caller: Caller) -> AgreementReport:
        """Inter-reviewer agreement on queued items (any logged-in user; see ``Curation.agreement``)."""
        return self.curation.agreement()

    def export(
        self,
        kind: ExportKind,
        out: Path,
        caller: Caller,
        filters: ExportFilter | None = None,
        name_reviewers: bool = False,
        licence: str = "other",
    ) -> ExportSummary:
        """Export the reviewed set as a dataset (admin; see ``Curation.export``).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: the output folder or a filter is unusable.
        """
        self._require_admin(caller, "export the reviewed set")
        return self.curation.export(kind, out, filters, name_reviewers, licence)

    def audit(
        self,
        caller: Caller,
        who: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: int = 1,
    ) -> AuditPage:
        """One page of the audit log, newest first (admin; see ``Curation.audit``).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: an unknown kind, an unreadable date, or a page out of range.
        """
        self._require_admin(caller, "read the audit log")
        return self.curation.audit(who, kind, since, until, page)

    def rubric_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Rubric ratings per version of the rated answer: ``{version: {axis: {level: n}}}`` (empty with the rubric off)."""
        if self.rubric is None:
            return {}
        rated = [(j.generation.version_of(j.feedback.candidate), j.feedback.rubric)
                 for j in self.ledger.judgements() if j.feedback.rubric]  # fmt: skip
        return rating_counts(rated, self.rubric)

    # ----- reading -----
    @property
    def serving_version(self) -> str:
        """The version answering questions now."""
        return self.models.version

    @property
    def default_candidates(self) -> int:
        """How many candidates a question gets when the request does not say (``--candidates``)."""
        return self.settings.candidates

    @property
    def max_batch(self) -> int:
        """How many questions may be answered together in one batched call (``--max-batch``)."""
        return self.settings.max_batch

    @property
    def sampling_is_random(self) -> bool:
        """Whether answers are sampled; several candidates need it (greedy decoding gives one answer)."""
        return self.models.sampling.do_sample

    def version_names(self) -> list[str]:
        """Base, then every published version, oldest first."""
        return [BASE_VERSION, *self.registry.versions()]

    def generation(self, generation_id: str) -> Generation:
        """A recorded generation.

        Raises:
            NotFoundError: there is no generation with that id.
        """
        return self.ledger.generation(generation_id)

    def trainer_status(self) -> TrainerView:
        """The background trainer's state now."""
        return TrainerView.of(self.trainer.status())

    def status(self) -> ServiceStatus:
        """Serving version, feedback counts, trainer state and versions, for the UI and /status."""
        self.ledger.refresh()
        since = self.since_last_version()
        return ServiceStatus(
            serving_version=self.models.version,
            feedback_total=self.ledger.count(),
            generations_total=self.ledger.generations_total,
            corrupt_lines=len(self.ledger.corrupt),
            since_last_version=since,
            retrain_threshold=self.settings.retrain_threshold,
            until_next_retrain=max(0, self.settings.retrain_threshold - since),
            auto_retrain=self.settings.auto_retrain,
            trainer=self.trainer_status(),
            versions=self.version_names(),
            fast_path=self.models.fast.describe() if self.models.fast is not None else None,
            vllm=self.models.state() if isinstance(self.models, VllmModels) else None,
        )

    def versions(self) -> list[VersionRow]:
        """One row per version with its manifest figures, newest first, the serving one marked."""
        serving = self.models.version
        rows = [VersionRow.of(m, serving) for m in reversed(self.registry.manifests())]
        return [*rows, VersionRow.base(serving)]

    def dashboard_data(self) -> DashboardData:
        """Judgements, manifests, rounds, trainer state, KL budget and style adoption, read once."""
        self.ledger.refresh()
        manifests = self.registry.manifests()
        return DashboardData(
            judgements=self.ledger.judgements(),
            manifests=manifests,
            rounds=self.registry.rounds(),
            trainer=self.trainer.status(),
            kl_budget=self.settings.gate_kl_budget,
            style_adoption=self._adoption(manifests),
        )
