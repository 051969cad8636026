"""A real chat server for the tests (a tornado app on a free port, in a thread): what the
webhooks receive, and answers each test can set per path (200, 500, a redirect)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from tornado import web
from tornado.httpserver import HTTPServer

from tests.support.smtp import free_port


class ChatServer:
    """``with ChatServer() as chat``: ``chat.url("/hooks/ann")``; ``chat.answers["/hooks/ann"] = 500``;
    ``chat.received`` lists (path, text) of each POST that was answered 2xx or not."""

    def __init__(self):
        self.port = free_port()
        self.received: list[tuple[str, str]] = []
        self.answers: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[str]:
        return [text for p, text in self.received if p == path]

    def wait_for(self, path: str, part: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in self.to(path):
                if part in text:
                    return text
            time.sleep(0.2)
        raise AssertionError(f"no POST to {path} with '{part}' in {timeout}s; got {self.received}")

    def _app(self) -> web.Application:
        chat = self

        class Hook(web.RequestHandler):
            def post(self, path):
                path = "/" + path
                chat.received.append((path, json.loads(self.request.body)["text"]))
                code = chat.answers.get(path, 200)
                if 300 <= code < 400:
                    self.redirect(chat.url("/hooks/redirected"), status=code)
                    return
                self.set_status(code)
                self.finish("ok" if code == 200 else "no")

        return web.Application([(r"/(.*)", Hook)])

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        server = HTTPServer(self._app())
        server.listen(self.port, "127.0.0.1")
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()
        server.stop()
        self._loop.close()

    def __enter__(self) -> ChatServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
