"""Real identity providers for the tests, each its own process on a free local port:

- :class:`OIDCProvider`: django-oidc-provider (``tests/support/oidc_idp``) under Django's server;
- :class:`SlapdServer`: OpenLDAP's ``slapd`` (Debian package) with a small directory.

They are administered the way an IdP admin would (Django's ORM through a management script; LDAP
modify operations), never by reaching into the hub.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.hubproc import ROOT, free_port

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)


def django_oidc_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("django", "oidc_provider"))


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class OIDCProvider:
    """An OpenID Connect provider with one confidential client (the hub) and test users."""

    client_id = "gpulab-hub"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.url}/openid"
        self.client_secret = os.urandom(24).hex()
        self.secret_file = self.dir / "client_secret"
        self.secret_file.write_text(self.client_secret)
        self.log = self.dir / "idp.log"
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.support.oidc_idp.settings",
                        OIDC_IDP_URL=self.url, OIDC_IDP_DB=str(self.dir / "idp.sqlite3"),
                        PYTHONPATH=str(ROOT))

    def ctl(self, **spec) -> None:
        r = subprocess.run([sys.executable, "-m", "tests.support.oidc_idp.ctl", json.dumps(spec)],
                           cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"IdP admin command failed:\n{r.stdout}\n{r.stderr}")

    def start(self, redirect_uris: list[str], users: list[dict]) -> OIDCProvider:
        self.ctl(setup={"client_id": self.client_id, "client_secret": self.client_secret,
                        "redirect_uris": redirect_uris}, users=users)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"{self.issuer}/.well-known/openid-configuration", self.proc, self.log)
        return self

    def set_groups(self, user: str, groups: list[str]) -> None:
        self.ctl(set_groups={user: groups})

    def stop(self) -> None:
        _stop(self.proc)


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 16777216
suffix "{base}"
rootdn "cn=admin,{base}"
rootpw {rootpw}
directory {dir}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


class SlapdServer:
    """OpenLDAP with ou=people and ou=groups (groupOfNames) under ``dc=lab,dc=example``."""

    base = "dc=lab,dc=example"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.rootpw = os.urandom(12).hex()
        self.log = self.dir / "slapd.log"
        self.proc: subprocess.Popen | None = None
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(SLAPD_CONF.format(dir=self.dir, base=self.base, rootpw=self.rootpw))

    def user_dn(self, name: str) -> str:
        return f"uid={name},ou=people,{self.base}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},ou=groups,{self.base}"

    def ldif(self, users: dict[str, str], groups: dict[str, list[str]]) -> str:
        out = [f"dn: {self.base}\nobjectClass: dcObject\nobjectClass: organization\ndc: lab\no: Lab\n",
               f"dn: ou=people,{self.base}\nobjectClass: organizationalUnit\nou: people\n",
               f"dn: ou=groups,{self.base}\nobjectClass: organizationalUnit\nou: groups\n"]
        for name, password in users.items():
            out.append(f"dn: {self.user_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\n"
                       f"sn: {name}\nmail: {name}@lab.example\nuserPassword: {password}\n")
        for group, members in groups.items():
            # groupOfNames needs a member: the admin entry stands in for an empty group
            dns = [self.user_dn(m) for m in members] or [f"cn=admin,{self.base}"]
            out.append(f"dn: {self.group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n"
                       + "".join(f"member: {d}\n" for d in dns))
        return "\n".join(out)

    def start(self, users: dict[str, str], groups: dict[str, list[str]]) -> SlapdServer:
        data = self.dir / "data.ldif"
        data.write_text(self.ldif(users, groups))
        # load offline (no server round trips), then serve
        r = subprocess.run([SLAPD.replace("slapd", "slapadd"), "-f", str(self.conf), "-l", str(data)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"slapadd failed:\n{r.stderr}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SLAPD, "-f", str(self.conf), "-h", self.url, "-d", "0"],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        import ldap3

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                ldap3.Connection(ldap3.Server("127.0.0.1", port=self.port), auto_bind=True).unbind()
                return self
            except ldap3.core.exceptions.LDAPException:
                time.sleep(0.1)
        raise RuntimeError(f"slapd did not answer in 30s:\n{self.log.read_text()[-3000:]}")

    def admin_connection(self):
        import ldap3

        return ldap3.Connection(ldap3.Server("127.0.0.1", port=self.port), f"cn=admin,{self.base}",
                                self.rootpw, auto_bind=True)

    def remove_member(self, group: str, user: str) -> None:
        import ldap3

        conn = self.admin_connection()
        conn.modify(self.group_dn(group), {"member": [(ldap3.MODIFY_DELETE, [self.user_dn(user)])]})
        assert conn.result["result"] == 0, conn.result
        conn.unbind()

    def stop(self) -> None:
        _stop(self.proc)
