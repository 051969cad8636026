"""Built-in accounts (NativeAuthenticator) through their pages: sign-up, admin approval, login,
wrong password, password rules, and an account locked after too many failed attempts."""

from __future__ import annotations

import html

import pytest

from tests.hub.test_form import PASSWORD, login, session_get_xsrf, signup

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def hub(module_hub_factory):
    return module_hub_factory(extra={"auth": {"native": {
        "minimum_password_length": 10, "check_common_password": True,
        "allowed_failed_logins": 3, "seconds_before_next_try": 600}}})


@pytest.fixture(scope="module")
def admin(hub):
    signup(hub, "admin")
    s, r = login(hub, "admin")
    assert r.status_code == 302, r.text[:300]
    return s


def test_signup_approval_login(hub, admin):
    r = signup(hub, "ivy")
    assert "Your information has been sent to the admin" in r.text
    _, r = login(hub, "ivy")
    assert "has not been authorized by an administrator yet" in r.text
    # the admin sees the request on /hub/authorize and approves it
    page = admin.get(f"{hub.url}/hub/authorize").text
    assert "ivy" in page
    assert admin.get(f"{hub.url}/hub/authorize/ivy").status_code == 200
    s, r = login(hub, "ivy")
    assert r.status_code == 302 and s.get(f"{hub.url}/hub/home").status_code == 200


def test_password_rules(hub):
    for weak in ("short", "password123"):  # too short; in the common-passwords list
        r = signup(hub, "jack", weak)
        assert "your password has at least 10 characters and is not too common" in r.text
        _, r = login(hub, "jack", weak)
        assert r.status_code != 302 and "Invalid username or password" in r.text


def test_wrong_password_then_locked(hub, admin):
    signup(hub, "kim")
    admin.get(f"{hub.url}/hub/authorize/kim")
    for _ in range(2):
        _, r = login(hub, "kim", "wrong-password-x")
        assert "Invalid username or password" in r.text
    _, r = login(hub, "kim", "wrong-password-x")  # the third failure locks the account
    text = html.unescape(r.text)
    assert "Too many failed sign-in attempts for kim" in text and "600 seconds" in text
    _, r = login(hub, "kim", PASSWORD)  # even the right password, while locked
    assert r.status_code != 302 and "Too many failed sign-in attempts" in html.unescape(r.text)


def test_unapproved_user_cannot_use_the_api(hub):
    signup(hub, "lou")
    s, r = login(hub, "lou")
    assert r.status_code != 302
    assert s.get(f"{hub.url}/hub/spawn", allow_redirects=False).status_code in (302, 403)


def test_login_form_needs_xsrf(hub):
    import requests

    s = requests.Session()
    session_get_xsrf(s, f"{hub.url}/hub/login")
    r = s.post(f"{hub.url}/hub/login", data={"username": "admin", "password": PASSWORD}, allow_redirects=False)
    assert r.status_code == 403
    # what a browser shows for a login form left open past its XSRF cookie's hour: the form again,
    # saying why (it was an empty page)
    assert "Login form invalid or expired. Try again." in r.text and 'name="password"' in r.text, r.text[:300]
    assert "Uncaught exception in write_error" not in hub.log_path.read_text(errors="replace")
