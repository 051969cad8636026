"""In a real browser: a person signs in through an identity provider's page (OpenID Connect), and
one outside the allowed groups is told why not."""

from __future__ import annotations

import pytest

from tests.conftest import require
from tests.support.browser import new_page, shot
from tests.support.hubproc import Hub
from tests.support.idp import OIDCProvider, django_oidc_available

pytestmark = [pytest.mark.browser, pytest.mark.hub]


def test_sign_in_through_an_identity_provider(browser, tmp_path_factory, local_backend):
    require(django_oidc_available(), "an OpenID Connect provider (pip: django, django-oidc-provider)")
    idp = OIDCProvider(tmp_path_factory.mktemp("idp"))
    auth = {"kind": "oidc",
            "oidc": {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret": f"file:{idp.secret_file}",
                     "login_service": "Lab SSO"},
            "group_map": {"ds-researchers": ["researcher"]}, "allowed_groups": ["ds-researchers"]}
    hub = Hub(tmp_path_factory.mktemp("hub"), extra={"auth": auth}, local=dict(local_backend),
              quotas={"default": {"max_gpus": 1}, "groups": {"researcher": {"max_gpus": 2}}})
    try:
        idp.start([f"{hub.url}/hub/oauth_callback"],
                  [{"name": "omar", "password": "omar-pass-1", "groups": ["ds-researchers"]},
                   {"name": "pia", "password": "pia-pass-1", "groups": ["sales"]}])
        hub.start()
        page = new_page(browser)
        page.goto(f"{hub.url}/hub/login")
        shot(page, "login-sso")
        page.get_by_text("Sign in with Lab SSO").click()
        page.fill("#id_username", "omar")
        page.fill("#id_password", "omar-pass-1")
        page.click("#idp-submit")
        page.wait_for_selector("#gpulab-form")
        assert "Limit: 2 GPUs at a time (group 'researcher')" in " ".join(page.inner_text("#gpulab-quota").split())

        other = new_page(browser)
        other.goto(f"{hub.url}/hub/oauth_login")
        other.fill("#id_username", "pia")
        other.fill("#id_password", "pia-pass-1")
        other.click("#idp-submit")
        other.wait_for_load_state()
        body = other.inner_text("body")
        assert "403" in body and "this hub is only for members of ds-researchers" in body
        shot(other, "not-allowed")
    finally:
        hub.close()
        idp.stop()
