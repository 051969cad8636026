"""Every gpulab authenticator notes who asks for a stop (``accounting/stops.py``): JupyterHub
calls ``refresh_user(user, handler)`` right before each stop it performs on request when
``refresh_pre_stop`` is on, with the request's handler, the only place a plugin hears who asked.

gpulab turns ``refresh_pre_stop`` on only to listen: on a stop request (``DELETE``) the upstream
refresh is not run, so stopping works exactly as before (an IdP's expired tokens or a person who
left an allowed group never block an admin, a culler or the person from stopping a server).
"""

from __future__ import annotations

from traitlets import HasTraits, default

from ..accounting import stops


class NoteStopRequester(HasTraits):
    """First in an authenticator's bases (a HasTraits, so its ``@default`` registers)."""

    @default("refresh_pre_stop")
    def _gpulab_default_refresh_pre_stop(self):
        return True

    async def refresh_user(self, user, handler=None, **kwargs):
        stops.note(user.name, handler)
        if handler is not None and handler.request.method == "DELETE":
            return True
        return await super().refresh_user(user, handler, **kwargs)
