"""Sending one email over SMTP (blocking: the notifier calls it in a thread)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path


def send(conf: dict, to: str, subject: str, body: str) -> None:
    """Send through ``notifications.smtp``; raises OSError/smtplib.SMTPException on failure."""
    msg = EmailMessage()
    msg["From"] = conf["sender"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="gpulab")
    msg.set_content(body)
    timeout = float(conf["timeout_seconds"])
    if conf["ssl"]:
        server = smtplib.SMTP_SSL(conf["host"], int(conf["port"]), timeout=timeout,
                                  context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(conf["host"], int(conf["port"]), timeout=timeout)
    with server:
        if conf["starttls"] and not conf["ssl"]:
            server.starttls(context=ssl.create_default_context())
        if conf["username"]:
            password = Path(conf["password_file"]).read_text().strip() if conf["password_file"] else ""
            server.login(conf["username"], password)
        server.send_message(msg)
