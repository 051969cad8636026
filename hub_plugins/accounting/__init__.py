"""Accounting: what servers cost (``pricing``) and where budgets stand (``budgets``). Pure."""
