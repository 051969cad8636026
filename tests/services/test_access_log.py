"""A service's access log: the hub's check that it is up (every minute) at debug level, the
rest as tornado logs it."""

import logging

import pytest

from services.base import access_level

P = "/services/mlflow/"


@pytest.mark.parametrize("method, path, status, credentials, level", [
    ("GET", "/services/mlflow/", 401, False, logging.DEBUG),  # the hub's check, MLflow's answer
    ("GET", "/services/billing", 302, False, logging.DEBUG),  # the login redirect, no slash
    ("GET", "/services/mlflow/", 401, True, logging.WARNING),  # credentials refused: worth a look
    ("GET", "/services/mlflow/", 200, True, logging.INFO),
    ("GET", "/services/mlflow/api/2.0/mlflow/runs/get", 401, False, logging.WARNING),
    ("POST", "/services/mlflow/", 401, False, logging.WARNING),
    ("GET", "/services/mlflow/", 500, False, logging.ERROR),  # a failing service is never hidden
    ("GET", "/services/mlflow/", 404, False, logging.WARNING),
])
def test_the_hubs_check_is_quiet(method, path, status, credentials, level):
    prefix = "/services/billing/" if "billing" in path else P
    assert access_level(method, path, status, credentials, prefix) == level
