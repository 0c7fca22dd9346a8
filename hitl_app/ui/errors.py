"""``user_errors``: a handler's ``UserError`` becomes the ``gr.Error`` the user reads; nothing else is caught."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Callable

import gradio as gr

from ..core.errors import UserError

# One logger for every tab and endpoint: a refused request is logged the same wherever it came from.
log = logging.getLogger("hitl_app.ui")


def user_errors(fn: Callable) -> Callable:
    """Show a ``UserError`` to the user as ``gr.Error``; anything else is logged as a defect.

    A user error is the user's to fix, not a defect: it is logged as one line with the login and
    the message, without Gradio's traceback. Generator handlers (streaming) are wrapped as
    generators.
    """

    def refused(exc: UserError, args: tuple, kwargs: dict) -> gr.Error:
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        log.info("%s refused for %s: %s", fn.__name__, getattr(request, "username", None) or "anonymous", exc)
        return gr.Error(str(exc), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as exc:
                raise refused(exc, args, kwargs) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise refused(exc, args, kwargs) from exc

    return wrapper
