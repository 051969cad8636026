"""The GPU-aware idle culler: ``python -m services.culler``."""
