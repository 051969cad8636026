"""The quotas service (``/services/quotas/``): everyone sees their own groups, limits, usage and
overrides; hub admins list, add and remove quota overrides, every change audited.

``core`` holds the logic (tested directly), ``forms`` the page form parsing, ``app`` the thin
tornado app, ``__main__`` the entry point JupyterHub starts.
"""
