"""The hub's own pages, extended for gpulab: the home page (each server's profile, GPUs, state,
cost so far and time left), the progress page (gpulab's latest message as its status line), a
settings page for admins, and the small JSON API these pages call (``/hub/api/gpulab/...``).

JupyterHub's templates are extended, not copied (``templates/`` is put first on
``c.JupyterHub.template_paths`` and each page ``{% extends "templates/<page>.html" %}``); the
handlers are added to the running hub (``settings/hubapp.py``, ``add_pages``). What a page shows is
computed by pure functions (``status.py``) from what JupyterHub hands us (spawners) and gpulab's
own tables.
"""
