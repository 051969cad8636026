"""Docker backend (``backend: docker``): the spawner (``spawner.py``); pure parts in ``spec``
(container arguments), ``reconcile`` (orphans) and ``images``."""
