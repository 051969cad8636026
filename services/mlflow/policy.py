"""What the MLflow front lets through, and what it adds (pure; tested with tables).

MLflow's basic-auth app enforces per-experiment permissions (the default is no permission: a
user sees only what they created or what was shared with them; admins see everything). The
front adds three rules MLflow cannot know about:

- experiment names with a '/' are namespaced: ``<user>/...`` belongs to that hub user and nobody
  else may create or rename an experiment into it (so nobody can take a user's default experiment
  name before them); names without '/' are free (and protected by MLflow's permissions);
- accounts are managed by the hub: users cannot create MLflow users or change passwords;
- runs created with a spawn's credentials are tagged with the server that made them;
- MLflow's AI assistant is off: its API is refused (MLflow lets it run tools on the host for
  requests from localhost, and through the front every request comes from localhost), its
  button is hidden and MLflow's telemetry notice is pre-dismissed (:data:`UI_PRESET`).
"""

from __future__ import annotations

import json
import re

API = r"/(?:ajax-)?api/[23]\.0/mlflow"
_CREATE_EXPERIMENT = re.compile(API + r"/experiments/create$")
_RENAME_EXPERIMENT = re.compile(API + r"/experiments/update$")
_CREATE_RUN = re.compile(API + r"/runs/create$")
_ACCOUNTS = re.compile(API + r"/users/(create|create-ui|update-password|update-admin|delete)$|/signup$")
_ASSISTANT = re.compile(r"/(?:ajax-)?api/[23]\.0/mlflow/assistant(/|$)")
JSON_PATHS = (_CREATE_EXPERIMENT, _RENAME_EXPERIMENT, _CREATE_RUN)
UI_PATHS = ("", "/")  # MLflow's single page (index.html)

# Put first in the UI's <head>: the settings MLflow's UI keeps in localStorage (key_v<version>),
# so that its telemetry notice and UI telemetry are off and its assistant never opens, and the
# assistant's buttons hidden (its API is refused anyway). The server itself runs with
# MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK (server.py).
UI_PRESET = (
    "<script>try{var s=window.localStorage;"
    "s.setItem('mlflow.telemetry.info.alert.dismissed_v1','true');"
    "s.setItem('mlflow.settings.telemetry.enabled_v1','false');"
    "s.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1','true');"
    "s.setItem('mlflow.assistant.panelOpen_v1','false');}catch(e){}</script>"
    "<style>[data-assistant-ui]{display:none!important}</style>"
)


def with_preset(html: bytes) -> bytes:
    """MLflow's index.html with :data:`UI_PRESET` first in its head."""
    marker = b"<head>"
    at = html.find(marker)
    if at < 0:
        return html
    return html[: at + len(marker)] + UI_PRESET.encode() + html[at + len(marker):]

TAG_PREFIX = "gpulab."


def experiment_name(user: str, server: str = "", profile: str = "") -> str:
    """One experiment per user, ``<user>/notebooks``, whatever the server: named servers come and
    go, and an experiment each filled MLflow's list. Runs say which server made them (the
    ``gpulab.server`` and ``gpulab.profile`` tags)."""
    return f"{user}/notebooks"


def needs_body(path: str) -> bool:
    """Requests whose JSON body the front reads (small API calls); others stream through."""
    return any(p.search(path) for p in JSON_PATHS)


def namespace_owner(name: str) -> str | None:
    return name.split("/", 1)[0] if "/" in name else None


def refusal(path: str, method: str, body: bytes, user: str, admin: bool) -> str | None:
    """Why the front refuses this request (a message for the user), or None."""
    if _ACCOUNTS.search(path) and not admin:
        return "MLflow accounts are managed by JupyterHub; ask an admin"
    if _ASSISTANT.search(path):
        return "MLflow's assistant is turned off on this hub"
    if method == "POST" and (_CREATE_EXPERIMENT.search(path) or _RENAME_EXPERIMENT.search(path)):
        data = _json(body)
        name = data.get("name") if _CREATE_EXPERIMENT.search(path) else data.get("new_name")
        owner = namespace_owner(name) if isinstance(name, str) else None
        if owner is not None and owner != user and not admin:
            return (f"experiment names starting with '{owner}/' belong to user {owner}; "
                    f"use '{user}/...' for yours")
    return None


def run_tags(user: str, server: str = "", profile: str = "", gpus=(), gpu_type: str = "") -> dict[str, str]:
    tags = {"gpulab.user": user, "mlflow.user": user}
    if server or profile:  # a spawn's credentials (not the browser)
        tags.update({
            "gpulab.server": server, "gpulab.profile": profile,
            "gpulab.gpus": ",".join(gpus), "gpulab.gpu_type": gpu_type,
        })
    return tags


def tag_run(body: bytes, tags: dict[str, str]) -> bytes:
    """A runs/create body with gpulab's tags added. Ours replace the caller's of the same key
    (a run cannot claim another user or server); other tags the caller set are kept."""
    data = _json(body)
    if not isinstance(data, dict):
        return body
    existing = [t for t in data.get("tags") or [] if isinstance(t, dict)]
    kept = [t for t in existing if t.get("key") not in tags]
    data["tags"] = kept + [{"key": k, "value": v} for k, v in tags.items()]
    data["user_id"] = tags["gpulab.user"]
    return json.dumps(data).encode()


def _json(body: bytes):
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return {}
