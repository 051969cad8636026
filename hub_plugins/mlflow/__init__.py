"""MLflow for every server: the hub side (service definition, env provider). The service itself
is in ``services/mlflow``; see docs/mlflow.md."""
