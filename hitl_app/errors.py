"""User-facing errors.

A ``UserError`` is a problem with what the user asked for (bad input, unknown id, missing
permission). The UI turns it into ``gr.Error`` with the message unchanged; everything else is a
defect and is logged with its traceback.
"""


class UserError(ValueError):
    """A request that cannot be honoured, with a message meant for the person who made it."""


class NotFoundError(UserError):
    """A generation, version or other named object that does not exist."""


class PermissionDeniedError(UserError):
    """The logged-in user lacks the role the action needs."""
