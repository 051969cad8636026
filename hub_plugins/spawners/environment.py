"""What a server is given and what the hub remembers of it: part of ``GPUSpawnerMixin``.

The environment (profile, devices, shares of a shared GPU) and the spawner state that keeps the
GPUs a server holds across hub restarts.
"""

from __future__ import annotations

from traitlets import HasTraits

from ..gpu.sharing import STARTUP_DIR, ShareCaps, caps_for, prepend_path, share_env
from .lifecycle import Event
from .recovery import HeldGPUs


class GPUEnvironmentMixin(HasTraits):
    """Environment and state (a base of ``GPUSpawnerMixin``)."""

    # -- environment and state -------------------------------------------------------------
    def gpulab_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        req, alloc = self.gpulab_request, self.gpulab_allocation
        if req is not None:
            env.update(req.profile.env)
            env["GPULAB_PROFILE"] = req.profile.name
        env.update(getattr(self, "_gpulab_provided_env", {}))
        env["GPULAB_HUB_ID"] = self.gpulab.hub_id  # how the reconcile finds this hub's servers
        if alloc is not None:
            env.update(self.gpulab_device_env(alloc))
            env["GPULAB_GPUS"] = ",".join(alloc.visible_ids)
            env["GPULAB_GPU_COUNT"] = str(alloc.count)
            env["GPULAB_GPU_TYPE"] = alloc.gpu_type
            env["GPULAB_SPAWN_ID"] = alloc.spawn_id
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.gpulab_env())
        caps = self.gpulab_share_caps()
        if caps is not None:
            env.update(self.gpulab_share_env(caps, env))
        return env

    # -- shares of a shared GPU (docs/sharing.md) ---------------------------------------------
    def gpulab_share_caps(self) -> ShareCaps | None:
        """What this server's share of a shared GPU promises (None: it holds no share)."""
        alloc = self.gpulab_allocation
        if alloc is None:
            return None
        return caps_for(alloc.gpu_type, alloc.count, alloc.devices,
                        lambda: self.gpulab.inventory().of_type(alloc.gpu_type))

    def gpulab_share_env(self, caps: ShareCaps, env: dict) -> dict[str, str]:
        """The variables holding a sharer to its share, cooperatively: frameworks' memory caps
        and the startup hook applying them. Backends with stronger means add theirs."""
        out = share_env(caps)
        hook = self.gpulab_share_hook_dir()
        if hook:
            out["PYTHONPATH"] = prepend_path(env.get("PYTHONPATH", ""), hook)
        return out

    def gpulab_share_hook_dir(self) -> str | None:
        """Where the server finds gpulab's startup hook (None: it cannot)."""
        return str(STARTUP_DIR)

    def get_state(self):
        state = super().get_state()
        held = self.gpulab_held
        if held is not None:
            state.update(held.to_state())
        return state

    def load_state(self, state):
        super().load_state(state)
        held = HeldGPUs.from_state(state)
        if held is not None:
            # a server whose state was saved had started: if it is still alive it is charged
            self.gpulab_lifecycle(Event.RESTORED)
            self.gpulab_held = held
            self.gpulab_holding = held.spawn_id

    def clear_state(self):
        super().clear_state()
        # The rows in our tables are released by run_post_stop_hook, not here: LocalProcessSpawner
        # clears state from poll() too, before JupyterHub has decided the server is gone.
        self.gpulab_held = None
        self._gpulab_adopted_url = ""
