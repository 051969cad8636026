"""What each gpulab service may do with its own token: one list per service, used by the hub's
``update_services`` and by the Helm values (so both grant the same least scopes)."""

from ..scopes import MANAGE_QUEUE, READ_USAGE

# Billing lists groups for its admin page (per-group usage): list:groups to list them, read:groups
# for members.
BILLING_SCOPES = ("list:users", "read:users:groups", "list:groups", "read:groups")
CULLER_SCOPES = ("list:users", "read:users:groups", "read:users:activity", "read:servers", "servers",
                 "delete:servers")
# the quotas service looks people up and reads their groups
QUOTAS_SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups"]
# What a person's token for billing may carry beyond access to it (their gpulab admin scopes).
BILLING_ALLOWED = [READ_USAGE, MANAGE_QUEUE]
