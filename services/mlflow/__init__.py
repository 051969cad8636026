"""MLflow tracking as a JupyterHub service (see app.py and docs/mlflow.md)."""
