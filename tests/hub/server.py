"""A local, Hub-compatible HTTP server for tests: the real `huggingface_hub` client uploads to it and downloads from it.

There is no Hugging Face Hub in CI, and mocking `huggingface_hub` would test our mocks rather than the
code paths users run (`snapshot_download`, `upload_folder`, peft's `from_pretrained` / `push_to_hub`).
`LocalHubServer` is a stdlib `http.server` in a background thread, bound to 127.0.0.1 only, that
speaks enough of the Hub API (see `routes.py`) for those clients, and keeps its repos in a
temporary folder (see `store.py`).

It never runs unbounded: it stops by itself after `max_lifetime_s`, idle keep-alive connections are
closed after `idle_timeout_s`, and `stop()` (or leaving the `with` block) closes every connection and
removes the temporary folder.

    with LocalHubServer() as hub:
        HfApi(endpoint=hub.endpoint).create_repo("user/demo")

The test suite starts one for the whole session before anything imports huggingface_hub (see
`tests/conftest.py` and `env.py`); `python tests/hub/serve.py` runs one on its own.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import tempfile
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .routes import ROUTES, HubApp, Request, Response
from .store import HubError, HubStore

HOST = "127.0.0.1"
MAX_BODY_BYTES = 1 << 30


class LocalHubServer:
    """A Hub-compatible server on 127.0.0.1 with its own temporary storage.

    Args:
        root: Folder holding the repos; a temporary folder (removed on `stop()`) when None.
        token: When set, writes and reads of private repos need `Authorization: Bearer <token>`.
        user: The account `whoami` reports and the namespace of repos created without one.
        max_lifetime_s: The server stops by itself this many seconds after `start()`.
        idle_timeout_s: Keep-alive connections idle this long are closed.

    Attributes:
        requests: (method, path) of every request served, most recent last (for assertions in tests).
        store: The `HubStore` holding the repos, once started (to inspect or seed them directly).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        token: str | None = None,
        user: str = "user",
        max_lifetime_s: float = 600.0,
        idle_timeout_s: float = 30.0,
    ):
        if max_lifetime_s <= 0 or idle_timeout_s <= 0:
            raise ValueError(
                f"max_lifetime_s and idle_timeout_s must be positive, got {max_lifetime_s!r} and {idle_timeout_s!r}."
            )
        self._root_arg = root
        self.token = token
        self.user = user
        self.max_lifetime_s = max_lifetime_s
        self.idle_timeout_s = idle_timeout_s
        self.requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)
        self._tmp: str | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.store: HubStore | None = None

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:PORT`, the value for `HF_ENDPOINT` / `HfApi(endpoint=...)`."""
        if self._httpd is None:
            raise RuntimeError("LocalHubServer is not running; call start() or use it as a context manager.")
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> LocalHubServer:
        with self._lock:
            if self._httpd is not None:
                return self
            if self._root_arg is None:
                self._tmp = tempfile.mkdtemp(prefix="musicpeft-hub-")
            root = Path(self._tmp or self._root_arg)
            self.store = HubStore(root, user=self.user)
            self._httpd = _HTTPServer(HubApp(self.store, self.token), self.requests, self.idle_timeout_s)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="LocalHubServer", daemon=True
            )
            self._thread.start()
            self._timer = threading.Timer(self.max_lifetime_s, self.stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    def reset(self, token: str | None = None) -> None:
        """Forget every repo and recorded request, and require `token` from now on (None: no auth).

        One server serves a whole test session; each test that uses it starts from an empty Hub.
        """
        if self.store is None or self._httpd is None:
            raise RuntimeError("LocalHubServer is not running; call start() first.")
        self.store.clear()
        self.requests.clear()
        self.token = self._httpd.app.token = token

    def stop(self) -> None:
        """Stop serving, close open connections and remove the temporary storage (idempotent)."""
        with self._lock:
            httpd = self._httpd
            if httpd is None:
                return
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            self._httpd = None  # last: `running` turns False once everything is released

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: HubApp, log: collections.deque, idle_timeout_s: float):
        self.app = app
        self.log = log
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return client_address[0] == HOST  # bound to loopback anyway; refuse anything else outright

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end now."""
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every answer carries a Content-Length
    server_version = "LocalHubServer/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in LocalHubServer.requests instead of being printed

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.server.log.append((method, split.path))
        try:
            body = self._read_body()
            response = self._route(method, split.path, parse_qs(split.query), body)
        except HubError as err:
            response = _error_response(err)
        except Exception as err:  # a server bug: answer 500 with the cause rather than dropping the connection
            trace = traceback.format_exception_only(type(err), err)[-1].strip()
            response = _error_response(HubError(500, f"LocalHubServer failed on {method} {split.path}: {trace}"))
        self._send(response, head=method == "HEAD")

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Response:
        for methods, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match is None or method not in methods:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            host = self.headers.get("host") or f"{HOST}:{self.server.server_address[1]}"
            request = Request(method, params, query, body, self.headers, f"http://{host}")
            return handler(self.server.app, request)
        raise HubError(501, f"LocalHubServer does not implement {method} {path}.")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            raise HubError(413, f"Request body of {length} bytes; LocalHubServer accepts at most {MAX_BODY_BYTES}.")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response, head: bool) -> None:
        if response.file is not None:
            start, end = response.file_range or (0, response.file.stat().st_size - 1)
            length = end - start + 1
        else:
            payload = response.payload
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            length = len(data)
        self.send_response(response.status)
        headers = {"Content-Type": "application/json", **response.headers, "Content-Length": str(length)}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        if response.file is None:
            self.wfile.write(data)
            return
        with open(response.file, "rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def _error_response(err: HubError) -> Response:
    headers = {"X-Error-Message": " ".join(err.message.split()).encode("latin-1", "replace").decode("latin-1")}
    if err.code:
        headers["X-Error-Code"] = err.code
    if err.repo_commit:
        headers["X-Repo-Commit"] = err.repo_commit
    return Response(err.status, {"error": err.message}, headers)
