"""No secret or database is ever committed: a hub started by hand in the checkout writes its cookie
secret and SQLite file there, and `git add -A` once committed one (removed; .gitignore names them)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAMES = re.compile(r"(^|/)(jupyterhub_cookie_secret|.*\.sqlite|.*\.db|.*\.pem|.*\.key|id_rsa.*|\.env)$")
SECRET_TEXT = re.compile(rb"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_tracked_file_is_a_secret_or_a_database():
    files = tracked()
    assert "Makefile" in files  # the listing is real
    assert [p for p in files if SECRET_NAMES.search(p)] == []
    keys = [p for p in files if (ROOT / p).is_file() and SECRET_TEXT.search((ROOT / p).read_bytes())]
    assert keys == []


def test_the_files_a_hub_writes_in_the_checkout_are_ignored():
    names = ["jupyterhub_cookie_secret", "jupyterhub.sqlite", "config/state/x"]
    out = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == names
