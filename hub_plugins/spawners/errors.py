"""The SpawnException gpulab's spawners raise: JupyterHub's, shown to people as its message."""

from __future__ import annotations

from jupyterhub.spawner import SpawnException as HubSpawnException


class SpawnException(HubSpawnException):
    """JupyterHub 6's, but what its spawn page and progress stream show is the message alone.
    They show an exception's ``jupyterhub_message`` where it has one, else ``str(e)``, which for
    a SpawnException is its log line: people read "Error: 400 SpawnException(reason=quota): You
    asked for 3 GPUs; ..." above the form."""

    @property
    def jupyterhub_message(self) -> str:
        return self.message

    @property
    def jupyterhub_html_message(self) -> str | None:
        return self.message_html or None
