"""gpulab's own JupyterHub scopes (``custom_scopes``): what makes someone an admin in gpulab's
services. An explicit grant, held by the ``gpulab-admin`` role (hub.admin_users, the admin
automation tokens, identity-provider admins when roles are managed) and by any automation token
whose ``hub.api_token_scopes`` names one; never inferred from a generic hub scope such as
``list:users``, which a narrowed token may hold for other reasons.

The services receive a person's scopes through their OAuth token (each service allows only the
gpulab scopes it uses in ``oauth_client_allowed_scopes``) or a token's own scopes directly.
"""

from __future__ import annotations

READ_USAGE = "custom:gpulab:read:usage"
MANAGE_QUEUE = "custom:gpulab:admin:queue"
MANAGE_OVERRIDES = "custom:gpulab:admin:overrides"
MANAGE_SETTINGS = "custom:gpulab:admin:settings"

CUSTOM_SCOPES = {
    READ_USAGE: {"description": "Read every user's GPU usage, costs, quotas and budgets, and who holds each GPU "
                                "(gpulab's billing service)."},
    MANAGE_QUEUE: {"description": "Cancel anyone's request waiting in gpulab's GPU queue."},
    MANAGE_OVERRIDES: {"description": "Add and remove quota overrides, read their audit trail and any user's quota "
                                      "(gpulab's quotas service)."},
    MANAGE_SETTINGS: {"description": "See the running gpulab.yaml and reload it (/hub/gpulab/settings)."},
}
ADMIN_SCOPES = (READ_USAGE, MANAGE_QUEUE, MANAGE_OVERRIDES, MANAGE_SETTINGS)
ADMIN_ROLE = "gpulab-admin"


def holds(model: dict | None, scope: str) -> bool:
    """Whether the hub's model of a caller (``/hub/api/user``) lists ``scope`` unfiltered."""
    return bool(model) and scope in set(model.get("scopes") or ())

# What each service may do with its own token (the hub's update_services and the Helm values use
# the same lists). Billing lists groups for its admin page (per-group usage): list:groups to list
# them, read:groups for members.
BILLING_SCOPES = ("list:users", "read:users:groups", "list:groups", "read:groups")
CULLER_SCOPES = ("list:users", "read:users:groups", "read:users:activity", "read:servers", "servers",
                 "delete:servers")
# the quotas service looks people up and reads their groups
QUOTAS_SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups"]
# what a person's token for a service may carry beyond access to it (their gpulab admin scopes)
BILLING_ALLOWED = [READ_USAGE, MANAGE_QUEUE]
QUOTAS_ALLOWED = [MANAGE_OVERRIDES]
# what an admin's own token for the quotas service may also carry, to create people who have not
# signed in yet and put them in groups there (the service acts with the admin's token; the hub
# checks the admin's rights, the service holds none of them)
QUOTAS_ADMIN_SCOPES = ("admin:users", "admin:groups")
# the hub's own token (gpulab in the hub): remove the stopped named servers refused requests leave
HUB_SCOPES = ("delete:servers",)
