"""What each gpulab service may do with its own token: one list per service, used by the hub's
``update_services`` and by the Helm values (so both grant the same least scopes)."""

BILLING_SCOPES = ("list:users", "read:users:groups", "read:groups")
CULLER_SCOPES = ("list:users", "read:users:groups", "read:users:activity", "read:servers", "servers",
                 "delete:servers")
# the quotas service looks people up and reads their groups
QUOTAS_SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups"]
# what an admin's own token for the quotas service may do there: create people who have not
# signed in yet and put them in groups (the service acts with the admin's token)
QUOTAS_ADMIN_SCOPES = ("admin:users", "admin:groups")
# the hub's own token (gpulab in the hub): remove the stopped named servers refused requests leave
HUB_SCOPES = ("delete:servers",)
