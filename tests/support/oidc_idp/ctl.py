"""Administer the test IdP from the tests (as an IdP admin would): ``python -m
tests.support.oidc_idp.ctl '<json>'`` with {"setup": {...}} and/or {"users": [...]} and/or
{"set_groups": {"name": [groups]}}."""

import json
import sys

import django


def main(spec: dict) -> None:
    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    if "setup" in spec:
        call_command("migrate", verbosity=0)
        from oidc_provider.models import Client, ResponseType, RSAKey

        if not RSAKey.objects.exists():
            call_command("creatersakey", verbosity=0)
        s = spec["setup"]
        client, _ = Client.objects.get_or_create(client_id=s["client_id"])
        client.name = "gpulab"
        client.client_type = "confidential"
        client.client_secret = s["client_secret"]
        client.redirect_uris = s["redirect_uris"]
        client.require_consent = False
        client.save()
        client.response_types.set([ResponseType.objects.get(value="code")])
    for u in spec.get("users", []):
        user, _ = User.objects.get_or_create(username=u["name"])
        user.email = f"{u['name']}@lab.example"
        user.set_password(u["password"])
        user.save()
        spec.setdefault("set_groups", {})[u["name"]] = u.get("groups", [])
    for name, groups in spec.get("set_groups", {}).items():
        user = User.objects.get(username=name)
        user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
