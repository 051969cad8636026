"""``gpulab.yaml``: schema and defaults (``schema.py``, ``defaults.py``), loading (``loader.py``),
the typed settings every process reads (``typed.py``) and the translation into traitlets config
(``apply.py``).

Nothing is imported here: pure modules read ``schema.DEFAULTS`` without pulling in the loader or
the ``update_*`` functions (which import the backends), so the layers cannot form a cycle.
"""
