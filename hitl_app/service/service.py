"""HITLService: the one API behind both the UI and the named HTTP endpoints.

It validates every request, records generations and judgements in the store (durably, before
returning), triggers the background trainer every ``retrain_threshold`` judgements, and exposes
status, versions, and activation. Reviewers and roles always come from the login, passed in by
the caller from the server-side request, never from request data.

The actions are grouped by who takes them: ``review.py`` (asking and judging),
``comparing.py`` (blind A/B comparison) and ``admin.py`` (the loop, versions, styles and the
state the UI reads); ``base.py`` holds the state and the steps they share.
"""

from __future__ import annotations

from .admin import AdminActions
from .base import LOCAL_USER, Caller
from .comparing import ComparisonActions
from .review import ReviewActions

__all__ = ["HITLService", "Caller", "LOCAL_USER"]


class HITLService(ReviewActions, ComparisonActions, AdminActions):
    """Ask, judge, compare, retrain, inspect and activate (constructed as ``ServiceBase``)."""
