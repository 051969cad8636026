"""SLURM: read capacity from the cluster, build validated batch jobs, follow them (pure parsing
and option building here; commands in ``cli``; the spawner in ``spawners/slurm.py``)."""
