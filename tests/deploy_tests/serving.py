"""`steeropt serve` apps on real HTTP (uvicorn on 127.0.0.1, in a thread of the test process, sharing its loaded
model), and plain HTTP requests that show status codes and headers as a client sees them."""
from __future__ import annotations

import http.client
import json
import threading
import time

from tests.servers import free_port


class ServeThread:
    """create_app(lm, profile, **kw) served by uvicorn on a free loopback port until stop()."""

    def __init__(self, lm, profile, **kw):
        import uvicorn

        from steeropt.serve import create_app

        self.app = create_app(lm, profile, **kw)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServeThread":
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def batcher(self):
        return self.app.state.batcher


def request(url: str, path: str, body=None, *, method="POST", headers=None, timeout=300):
    """(status, headers, parsed JSON or text) of one request; `body` a dict (sent as JSON) or bytes."""
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    try:
        conn.request(method, path, body=data, headers={k: v for k, v in hdrs.items() if v is not None})
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, dict(r.getheaders()), parsed
    finally:
        conn.close()


def chat(url: str, prompt: str = "Hello", *, key: str | None = None, timeout=300, **fields):
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 6, **fields}
    return request(url, "/v1/chat/completions", body, headers={"Authorization": f"Bearer {key}" if key else None},
                   timeout=timeout)
