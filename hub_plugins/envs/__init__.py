"""Profile environments: pinned specs (spec.py, pure), the builder (install.py, stdlib only, also
used inside image builds), the environments directory with its locks and progress (manager.py),
what the form and spawners say about them (status.py, pure) and ``make envs`` (__main__.py)."""
