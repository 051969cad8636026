"""The billing service: ``python -m services.billing``."""
