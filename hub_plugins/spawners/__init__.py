"""Spawners: the GPU logic every backend shares (``mixin``, ``waiting``) and one package per
backend, each its adapter (``spawner.py``) beside its pure builders: ``local``, ``docker``,
``slurm``, ``kubernetes``. Nothing is imported here: JupyterHub loads a backend through its entry
point (``hub_plugins.spawners.<backend>.spawner``), and a backend's pure modules import without it.
"""
