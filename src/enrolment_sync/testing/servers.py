"""Loopback servers for the demo, the tests and the benchmarks: an ASGI app on a thread, a webhook receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import uvicorn

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server started as another process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """An ASGI app served by uvicorn on a background thread; entering returns once it listens.

    `port=0` binds a free port, known as `port` and `base_url` from `__enter__` on. Leaving asks uvicorn to
    stop, and forces it after `stop_timeout_s` (a request still in flight then is cut).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "on",
        graceful_shutdown_s: int | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 30.0,
        name: str = "uvicorn",
    ) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan=lifespan,
            timeout_graceful_shutdown=graceful_shutdown_s,
        )
        self.host = host
        self.port = port
        self.base_url = ""
        self.name = name
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced by __enter__; SystemExit from a failed startup too
            self._error = exc

    def __enter__(self) -> ThreadedServer:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        server = uvicorn.Server(self.config)
        self._sock, self._server, self._error = sock, server, None
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                error = self._error
                self.stop()
                raise RuntimeError(f"{self.name} failed to start on {self.base_url}") from error
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread, sock = self._server, self._thread, self._sock
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=self._stop_timeout_s)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5.0)
        if sock is not None:
            sock.close()
        self._server = self._thread = self._sock = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JsonReceiver:
    """A loopback HTTP server taking JSON posts (what Apprise's json:// sends); can be told to answer 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    failing = receiver.failing
                    if not failing:
                        receiver.received.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "hook") -> str:
        """The Apprise URL that posts here."""
        return f"json://{LOOPBACK}:{self.port}/{path}"

    def messages(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.received if path is None or m["path"] == f"/{path}"]

    def __enter__(self) -> JsonReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
