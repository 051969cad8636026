"""MLflow accounts and experiments, managed through MLflow's admin REST API (async I/O).

Each hub user has an MLflow account of the same name whose password is derived from the
service key (see ``tokens.account_password``); hub admins are MLflow admins (they read
everything). A spawn's default experiment ``<user>/<server or profile>`` is created ahead, with
the spawn's tags, and its owner gets MANAGE on it (so they can share it).
"""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .server import ADMIN_USER
from .tokens import account_password


class MLflowError(RuntimeError):
    pass


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Accounts:
    def __init__(self, base_url: str, admin_password: str, key: bytes, log: logging.Logger | None = None):
        self.base = base_url.rstrip("/")
        self.admin_auth = basic(ADMIN_USER, admin_password)
        self.key = key
        self.log = log or logging.getLogger("gpulab.mlflow")
        self._synced: dict[str, bool] = {}  # user -> admin flag, in line with the current key

    def auth_for(self, user: str) -> str:
        return basic(user, account_password(self.key, user))

    def rekey(self, key: bytes) -> None:
        self.key = key
        self._synced.clear()

    async def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None,
                   version: int = 2):
        url = f"{self.base}/api/{version}.0/mlflow/{path}"
        if params:
            url += "?" + urlencode(params)
        req = HTTPRequest(
            url, method=method, headers={"Authorization": self.admin_auth, "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None, request_timeout=30,
        )
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        try:
            data = json.loads(resp.body or b"{}")
        except ValueError:
            data = {"message": (resp.body or b"").decode(errors="replace")[:200]}
        return resp.code, data

    async def ensure_user(self, user: str, admin: bool = False) -> None:
        """The account exists, with the derived password and the right admin flag."""
        if user == ADMIN_USER:
            raise MLflowError(f"user name {user!r} is reserved for the MLflow service")
        if self._synced.get(user) == admin:
            return
        password = account_password(self.key, user)
        code, _ = await self.call("GET", "users/get", params={"username": user})
        if code == 200:
            code, data = await self.call("PATCH", "users/update-password", {"username": user, "password": password})
        else:
            code, data = await self.call("POST", "users/create", {"username": user, "password": password})
            if code == 200:
                self.log.info("created MLflow account %s", user)
        if code != 200:
            raise MLflowError(f"cannot set up the MLflow account of {user}: {code} {data.get('message', data)}")
        code, data = await self.call("PATCH", "users/update-admin", {"username": user, "is_admin": admin})
        if code != 200:
            raise MLflowError(f"cannot set the admin flag of {user}: {code} {data.get('message', data)}")
        self._synced[user] = admin

    async def user_exists(self, user: str) -> bool:
        code, _ = await self.call("GET", "users/get", params={"username": user})
        return code == 200

    async def ensure_experiment(self, name: str, owner: str, tags: dict[str, str]) -> str:
        """The experiment's id; created with ``tags`` if missing; ``owner`` may manage it."""
        code, data = await self.call("GET", "experiments/get-by-name", params={"experiment_name": name})
        if code == 200:
            exp_id = data["experiment"]["experiment_id"]
        else:
            code, data = await self.call(
                "POST", "experiments/create",
                {"name": name, "tags": [{"key": k, "value": v} for k, v in tags.items()]},
            )
            if code != 200:
                raise MLflowError(f"cannot create experiment {name}: {code} {data.get('message', data)}")
            exp_id = data["experiment_id"]
        grant = {"username": owner, "resource_type": "experiment", "resource_id": exp_id, "permission": "MANAGE"}
        code, data = await self.call("POST", "users/permissions/grant", grant, version=3)
        if code != 200 and data.get("error_code") != "RESOURCE_ALREADY_EXISTS":
            raise MLflowError(f"cannot grant {owner} experiment {name}: {code} {data.get('message', data)}")
        return exp_id
