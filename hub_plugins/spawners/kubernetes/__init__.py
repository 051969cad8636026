"""Kubernetes backend: the spawner (``spawner.py``) over KubeSpawner with queue reporting
(``kubespawner.py``); pure parts: capacity from nodes and pods (``nodes``), pod settings from
profiles (``overrides``), the queue of unschedulable pods (``queue``), the z2jh Helm values
(``helm``, ``hubconfig``); I/O in ``capacity``."""
