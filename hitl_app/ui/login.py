"""``Login``: who is asking, from the server-side request; never from request data."""

from __future__ import annotations

import gradio as gr

from ..core.errors import UserError
from ..service.service import LOCAL_USER, Caller


class Login:
    """Turns a Gradio request into the logged-in ``Caller``.

    Args:
        roles: username -> role for logged-in users; empty when the app runs without logins.
    """

    def __init__(self, roles: dict[str, str]) -> None:
        self.roles = roles

    def __call__(self, request: gr.Request | None) -> Caller:
        """The caller behind ``request``.

        Raises:
            UserError: logins are configured and the request carries none.
        """
        username = getattr(request, "username", None) if request is not None else None
        if username is None:
            if self.roles:
                raise UserError("not logged in")
            # No logins configured: the app listens on loopback for one local user (--share is
            # refused without logins), who administers it.
            return Caller(LOCAL_USER, "admin")
        return Caller(username, self.roles.get(username, "clinician"))
