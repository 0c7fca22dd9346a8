"""User-facing errors.

A ``UserError`` is a problem with what the user asked for (bad input, unknown id, missing
permission). The UI turns it into ``gr.Error`` with the message unchanged; everything else is a
defect and is logged with its traceback.
"""

import re


class UserError(ValueError):
    """A request that cannot be honoured, with a message meant for the person who made it."""


class NotFoundError(UserError):
    """A generation, version or other named object that does not exist."""


class PermissionDeniedError(UserError):
    """The logged-in user lacks the role the action needs."""


# C0 control characters other than tab, newline and carriage return, and DEL: never part of a
# clinical text, and terminal escapes or NULs in the store would surprise whoever reads it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(text: str, what: str) -> str:
    """Refuse text that cannot be stored as it was meant: not a string, a lone surrogate (invalid
    Unicode, e.g. from broken UTF-8 or UTF-16), or control characters.

    Raises:
        UserError: naming ``what`` and the problem.
    """
    if not isinstance(text, str):
        raise UserError(f"{what} must be text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(f"{what} is invalid text: a lone surrogate at position {exc.start} (broken Unicode)") from None
    bad = _CONTROL.search(text)
    if bad:
        raise UserError(f"{what} contains control characters (U+{ord(bad.group()):04X} at position {bad.start()})")
    return text
