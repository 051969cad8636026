"""SLURM backend: the spawner (``spawner.py``) over a hardened batchspawner (``batch.py``); pure
parsing and option building (``nodes``, ``sbatch``, ``jobs``, ``keyvalue``); commands in ``cli``;
the capacity reader in ``capacity``."""
