"""Run code in a kernel of a single-user server, through the server's own REST API and its
kernel websocket (as JupyterLab does): ``POST api/kernels``, then ``execute_request`` on
``api/kernels/<id>/channels``."""

from __future__ import annotations

import json
import time
import uuid

import requests
import websocket  # websocket-client, a dependency of jupyter_server


class KernelError(AssertionError):
    pass


def _message(code: str, session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "username": "tests", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


class Kernel:
    """A kernel of the server at ``server_url`` (``http://host/user/<name>/``)."""

    def __init__(self, server_url: str, token: str, timeout: float = 120):
        self.url = server_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        t0 = time.monotonic()
        r = requests.post(self.url + "api/kernels", headers=self.headers, json={"name": "python3"}, timeout=timeout)
        if r.status_code != 201:
            raise KernelError(f"starting a kernel: {r.status_code} {r.text[:500]}")
        self.id = r.json()["id"]
        ws_url = self.url.replace("http://", "ws://", 1) + f"api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
        self.session = uuid.uuid4().hex
        self.started_in = time.monotonic() - t0

    def run(self, code: str, timeout: float = 180) -> str:
        """The code's stdout; raises KernelError with the traceback if it fails."""
        msg = _message(code, self.session)
        self.ws.send(json.dumps(msg))
        out, err, error, replied, idle = [], [], None, False, False
        deadline = time.monotonic() + timeout
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise KernelError(f"no answer in {timeout}s; output so far: {''.join(out)}")
            self.ws.settimeout(max(1.0, deadline - time.monotonic()))
            m = json.loads(self.ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind = m["msg_type"]
            if kind == "stream":  # stderr (library warnings) goes with an error only
                (out if m["content"]["name"] == "stdout" else err).append(m["content"]["text"])
            elif kind == "error":
                error = "\n".join(m["content"].get("traceback", [])) or m["content"].get("evalue")
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        if error:
            raise KernelError(f"{error}\noutput: {''.join(out)}\nstderr: {''.join(err)[-2000:]}")
        return "".join(out)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            requests.delete(self.url + f"api/kernels/{self.id}", headers=self.headers, timeout=30)
