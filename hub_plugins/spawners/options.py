"""The request a spawn carries and the form that asks for it: part of ``GPUSpawnerMixin``.

The REST body checked as sent, ``user_options`` parsed into a ``SpawnRequest`` and the spawn
form (its model built from the core, rendered; a shared link or a refused choice shown again).
"""

from __future__ import annotations

from traitlets import HasTraits, default

from ..spawn.form import build_model, render
from ..spawn.request import STANDARD_EXTRAS, RequestError, SpawnRequest, from_form, parse
from ..validation import InputError, json_body
from .errors import SpawnException


class GPUOptionsMixin(HasTraits):
    """Parsing the request and the spawn form (a base of ``GPUSpawnerMixin``; a HasTraits
    subclass, so that its ``@default`` handlers for Spawner traits are registered)."""

    def gpulab_check_body(self) -> None:
        """A REST spawn's body as sent (JupyterHub has parsed it already, leniently): JSON or no
        content type, at most 64 KB, no NaN/Infinity. The form's POST is not an API call."""
        from jupyterhub.apihandlers.base import APIHandler

        handler = getattr(self, "handler", None)
        request = getattr(handler, "request", None)
        if request is None or not isinstance(handler, APIHandler):
            return
        try:
            json_body(request.body, request.headers.get("Content-Type"))
        except InputError as e:
            raise SpawnException(str(e), reason="invalid_options", status_code=e.status) from None

    def gpulab_parse(self, options) -> SpawnRequest:
        core = self.gpulab
        self.gpulab_check_body()
        try:
            req = parse(options, core.catalog, core.inventory().types, core.max_gpus_per_server,
                        self.gpulab_extra_options())
        except RequestError as e:
            raise SpawnException(str(e), reason="invalid_options", status_code=400) from None
        ok, why = self.gpulab_profile_available(req.profile)
        if not ok:
            raise SpawnException(f"Profile '{req.profile.name}' cannot start here: {why}",
                                 reason="profile_unavailable", status_code=400)
        return req

    def gpulab_extra_options(self) -> dict:
        """Further ``user_options`` keys and their validators (backends may add theirs)."""
        return dict(STANDARD_EXTRAS)

    # -- the spawn form --------------------------------------------------------------------
    @default("options_form")
    def _gpulab_default_options_form(self):
        return lambda spawner: spawner.gpulab_options_form()

    @default("options_from_form")
    def _gpulab_default_options_from_form(self):
        return from_form

    @default("apply_user_options")
    def _gpulab_default_apply_user_options(self):
        # gpulab applies user_options itself in run_pre_spawn_hook; this keeps JupyterHub from
        # warning that they are unhandled.
        return lambda spawner, user_options: None

    async def gpulab_options_form(self) -> str:
        await self.gpulab.wait_ready()
        model = await self.gpulab.run(
            build_model, self.gpulab, self.user.id, self.user.name, self.gpulab_groups, self.name or "",
            self.gpulab_profile_available, self.gpulab_profile_info, self.gpulab_prefill(),
        )
        enforced = self.gpulab_enforced_limits()
        for p in model.get("profiles", []):  # never promise a limit the host cannot keep
            if "cpu" not in enforced:
                p["cpu_limit"] = None
            if "memory" not in enforced:
                p["mem_limit"] = None
        return render(model)

    def gpulab_prefill(self) -> dict:
        """What the form shows chosen: the ``opt-`` query parameters of the spawn page (a shared
        link; JupyterHub 6 sets ``spawner.handler`` while it renders the form), else the choice
        gpulab just refused (a link's or the form's own), shown again with the refusal."""
        handler = getattr(self, "handler", None)
        request = getattr(handler, "request", None)
        if request is not None:
            link = {k[4:]: v[-1].decode("utf8", "replace") for k, v in request.query_arguments.items()
                    if k.startswith("opt-") and v}
            if link:
                return link
        return dict(getattr(self, "_gpulab_refused_options", None) or {})
