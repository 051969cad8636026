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
    # not from a link on another site, which the admin's browser would follow with its cookie
    for site in ("cross-site", "same-site"):
        r = admin.get(f"{hub.url}/hub/authorize/ivy", headers={"Sec-Fetch-Site": site})
        assert r.status_code == 403 and "followed from another site" in html.unescape(r.text)
        assert admin.get(f"{hub.url}/hub/discard/ivy", headers={"Sec-Fetch-Site": site}).status_code == 403
    _, r = login(hub, "ivy")
    assert "has not been authorized by an administrator yet" in r.text  # still waiting, still there
    r = admin.get(f"{hub.url}/hub/authorize/ivy", headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    s, r = login(hub, "ivy")
    assert r.status_code == 302 and s.get(f"{hub.url}/hub/home").status_code == 200


def test_password_rules(hub):
    for weak in ("short", "password123"):  # too short; in the common-passwords list
        r = signup(hub, "jack", weak)
        assert "your password has at least 10 characters and is not too common" in r.text
        _, r = login(hub, "jack", weak)
        assert r.status_code != 302 and "Invalid username or password" in r.text


def test_a_password_over_bcrypts_72_bytes_is_refused_with_why(hub, admin):
    """bcrypt 5 raises on more than 72 bytes: a long passphrase at sign-up, sign-in or change was
    a 500. Sign-up says the limit; a sign-in with one is an ordinary wrong password."""
    long = "correct horse battery staple is a very long passphrase that people do use!!"  # 75 bytes
    r = signup(hub, "liv", long)
    assert r.status_code == 200 and "longer than 72 bytes" in html.unescape(r.text), r.text[:500]
    assert "longer than 72 bytes" in html.unescape(signup(hub, "liv", "été-" * 13).text)  # 52 letters, 78 bytes
    _, r = login(hub, "liv", long)
    assert r.status_code == 200 and "Invalid username or password" in r.text
    _, r = login(hub, "admin", PASSWORD + "x" * 80)
    assert r.status_code == 200 and "Invalid username or password" in r.text
    # changing one's password to a long one is refused, an over-long current one is just wrong
    page = f"{hub.url}/hub/change-password"
    xsrf = admin.cookies.get("_xsrf") or admin.get(page).cookies.get("_xsrf")
    r = admin.post(page, data={"old_password": PASSWORD, "new_password": long, "new_password_confirmation": long,
                               "_xsrf": xsrf})
    assert r.status_code == 200 and "Something went wrong" in r.text, r.text[:500]
    r = admin.post(page, data={"old_password": "y" * 80, "new_password": PASSWORD + "2",
                               "new_password_confirmation": PASSWORD + "2", "_xsrf": xsrf})
    assert r.status_code == 200 and "Your current password was incorrect" in r.text, r.text[:500]
    assert login(hub, "admin")[1].status_code == 302  # unchanged


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
