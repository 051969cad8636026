"""A real SMTP server for the tests (aiosmtpd, in a thread): what arrives, as parsed messages."""

from __future__ import annotations

import email
import time
from email.message import Message

from aiosmtpd.controller import Controller

from tests.support.ports import free_port  # noqa: F401 (the tests import it from here)


class Inbox:
    def __init__(self):
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        msg["X-Rcpt"] = ",".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["X-Rcpt"] == address]

    def wait_for(self, address: str, subject_part: str, timeout: float = 60) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.to(address):
                if subject_part in m["Subject"]:
                    return m
            time.sleep(0.2)
        got = [(m["X-Rcpt"], m["Subject"]) for m in self.messages]
        raise AssertionError(f"no email to {address} about '{subject_part}' in {timeout}s; got {got}")


class SMTPServer:
    def __init__(self):
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
