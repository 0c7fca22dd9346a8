"""HITLService: the one API behind both the UI and the named HTTP endpoints.

It validates every request, records generations and judgements in the store (durably, before
returning), triggers the background trainer every ``retrain_threshold`` judgements, and exposes
status, versions, and activation. Reviewers and roles always come from the login, passed in by
the caller from the server-side request, never from request data.

The actions are grouped by who takes them: ``review.py`` (asking and judging), ``team.py`` (the
review queue: import, Next, skip, adjudication),
``comparing.py`` (blind A/B comparison) and ``admin.py`` (the loop, versions, styles and the
state the UI reads); ``base.py`` holds the state and the steps they share.
"""

from __future__ import annotations

from .admin import AdminActions
from .base import LOCAL_USER, Caller
from .comparing import ComparisonActions
from .review import ReviewActions
from .team import Pregenerator, TeamActions

__all__ = ["HITLService", "Caller", "LOCAL_USER"]


class HITLService(ReviewActions, TeamActions, ComparisonActions, AdminActions):
    """Ask, judge, work through the queue, compare, retrain, inspect and activate (constructed as
    ``ServiceBase``; ``pregenerator`` prepares queued items' candidates once started)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pregenerator = Pregenerator(self, self.settings.pregenerate)

    def close(self) -> None:
        """Stop the background work this service started (the model and trainer are closed by their owner)."""
        self.pregenerator.stop()
