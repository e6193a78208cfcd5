"""``agent run``: the inference service over HTTP (stdlib ``http.server``), with a bounded pool and queue.

Endpoints: ``POST /v1/infer`` (JSON ``{"inputs": {NAME: nested list}}`` or a ``.npy`` body for one-input
models; the answer carries ``X-Edgec-Bundle``), ``GET /healthz`` (200 while a checked bundle serves, else 503),
``GET /metrics`` (Prometheus text). The accept thread hands connections to ``workers`` threads through a queue
of ``queue_size``; when the queue is full the connection gets a 503 at once (overload is an answer, never a
crash). Bodies above ``max_body`` get 413 unread. It binds 127.0.0.1 unless given an address; any other address
needs a token (``--token-file``), checked on every endpoint with ``hmac.compare_digest``.
Keep-alive is honoured, but a worker closes its connection after an answer when others are waiting, so a few
persistent clients cannot starve the rest.

A request's own cost is kept small because it is paid with cold caches: a model that streams more weights than
the CPU's caches hold evicts the interpreter's code and data on every inference, and the stdlib's email-based
header parser, ``np.load``'s header ``literal_eval``, ``np.save`` and ``send_response`` then took 0.35 ms of CPU
a request for a 32 MB MLP (0.09 ms now; each of them takes 5-20 us with warm caches). The plain HTTP/1.x request head is parsed here with ``bytes`` operations
(http.server still handles anything unusual), and ``.npy`` bodies are read and written without numpy's file
machinery (``payload``).
"""

from __future__ import annotations

import email.utils
import hmac
import json
import os
import queue
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from edgec.device_agent.payload import PayloadError, decode, encode
from edgec.errors import UsageError

__all__ = ["BoundedHTTPServer", "Headers", "ServiceHandler", "is_loopback"]

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_HEADERS = 100  # http.server's limit too
MAX_LINE = 65536


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


class BoundedHTTPServer(socketserver.TCPServer):
    """A TCP server whose connections wait in a bounded queue for a fixed set of worker threads."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler, service, token: str | None, workers: int = 4, queue_size: int = 32,
                 max_body: int = 16 << 20):
        if not is_loopback(address[0]) and not token:
            raise UsageError(f"--host {address[0]}: a non-loopback address needs --token-file (clients send "
                             "'Authorization: Bearer TOKEN')")
        self.service, self.token, self.max_body = service, token, max_body
        self.jobs: queue.Queue = queue.Queue(queue_size)
        super().__init__(address, handler)
        self.workers = [threading.Thread(target=self._work, name=f"edgec-http-{k}", daemon=True)
                        for k in range(workers)]
        for thread in self.workers:
            thread.start()

    def process_request(self, request, client_address):
        try:
            self.jobs.put_nowait((request, client_address))
        except queue.Full:
            self.service.metrics.overload()
            _reject(request)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            request, address = job
            try:
                self.finish_request(request, address)
            except Exception:  # a client that vanished mid-answer; the service goes on
                pass
            finally:
                self.shutdown_request(request)

    def server_close(self):
        super().server_close()
        for _ in self.workers:
            self.jobs.put(None)


def _reject(sock) -> None:
    """503 from the accept thread without reading the request (it may not have arrived yet)."""
    body = b'{"error": "overloaded: too many requests waiting; retry later"}'
    try:
        sock.settimeout(0.5)
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)  # let the request arrive so closing does not reset the connection before our answer
    except OSError:
        pass
    finally:
        sock.close()


class Headers(dict):
    """Request headers by lower-case name (the first of repeated ones, as ``http.client``'s message gives)."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_date = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if now != _date[0]:
        _date[:] = now, email.utils.formatdate(now, usegmt=True)
    return _date[1]


class ServiceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgec-agent"
    timeout = 30  # a client that sends nothing for this long is dropped (slowloris)
    # Headers and body go out as two writes: with Nagle's algorithm on, the second waits for the client's delayed
    # ACK (40 ms on Linux) on every keep-alive request. Measured: 46 ms -> well under 1 ms per request.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # the service's stderr is a log file; one line per request is noise there
        pass

    def parse_request(self) -> bool:
        """The request line and headers of a plain HTTP/1.x request; anything else goes to http.server's parser
        (HTTP/0.9 lines, other versions), which answers it the way it always has."""
        words = self.raw_requestline.split()
        if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return super().parse_request()
        self.command, self.path, self.request_version = (w.decode("latin-1") for w in words)
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        self.close_connection = self.request_version == "HTTP/1.0"
        headers = self.headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.partition(b":")
            if len(line) > MAX_LINE or not colon or not name.strip() or name[:1] in b" \t":
                self.send_error(431 if len(line) > MAX_LINE else 400, "bad header line (too long, folded or "
                                "without a name)")
                return False
            key = name.strip().lower().decode("latin-1")
            value = value.strip().decode("latin-1")
            if key in headers and key in ("content-length", "transfer-encoding") and headers[key] != value:
                self.send_error(400, f"conflicting {key} headers")  # one body, one framing: no smuggling
                return False
            headers.setdefault(key, value)
        else:
            self.send_error(431, f"more than {MAX_HEADERS} headers")
            return False
        connection = headers.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if headers.get("expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _send(self, code: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
        if code >= 400 or not self.server.jobs.empty():
            self.close_connection = True
        head = [f"HTTP/1.1 {code} {_PHRASES.get(code, '')}\r\nServer: {self.server_version}\r\n"
                f"Date: {_http_date()}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"]
        head += [f"{key}: {value}\r\n" for key, value in (headers or {}).items()]
        if self.close_connection:
            head.append("Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":  # it asked for keep-alive; without this it would wait for a close
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        self.wfile.write("".join(head).encode("latin-1") + body)  # one write: headers and body in one segment

    def _error(self, code: int, message: str) -> None:
        self._send(code, json.dumps({"error": message}).encode())

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _handle(self, endpoint: str, work) -> None:
        metrics = self.server.service.metrics
        metrics.begin()
        start, code, reason = time.perf_counter(), 500, None
        try:
            if not self._authorized():
                code, reason = 401, "unauthorized"
                self._send(401, b'{"error": "missing or wrong token: send Authorization: Bearer TOKEN"}',
                           headers={"WWW-Authenticate": "Bearer"})
                return
            code, reason = work()
        except PayloadError as exc:
            code, reason = exc.status, "bad_request"
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            code, reason = 499, "client_gone"
            self.close_connection = True
        except Exception as exc:  # the runtime failed on an input that passed the checks: an answer, not a crash
            code, reason = 500, "internal"
            self._error(500, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            metrics.end(endpoint, code, time.perf_counter() - start, reason)

    def do_GET(self):
        path = self.path.split("?")[0]
        service = self.server.service
        if path == "/healthz":
            def health():
                doc = service.health()
                code = 200 if doc["serving"] else 503
                self._send(code, json.dumps(doc).encode())
                return code, None if code == 200 else "unavailable"
            self._handle("healthz", health)
        elif path == "/metrics":
            def metrics():
                self._send(200, service.render_metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
                return 200, None
            self._handle("metrics", metrics)
        else:
            self._handle("other", lambda: (self._error(404, f"no such endpoint {path!r}; see /healthz, /metrics, "
                                                            "POST /v1/infer"), (404, "not_found"))[1])

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise PayloadError(411, "chunked bodies are not accepted: send Content-Length")
        length = self.headers.get("Content-Length")
        try:
            size = int(length)
        except (TypeError, ValueError):
            raise PayloadError(411, "missing or invalid Content-Length") from None
        if size < 0 or size > self.server.max_body:
            self.close_connection = True  # the body stays unread
            raise PayloadError(413, f"body of {size} bytes; the limit is {self.server.max_body} (--max-body)")
        body = self.rfile.read(size)
        if len(body) != size:
            raise PayloadError(400, f"body ended after {len(body)} of {size} bytes")
        return body

    def _infer(self):
        service = self.server.service
        body = self._body()
        slot = service.acquire()
        if slot is None:
            raise PayloadError(503, "no bundle is serving (see /healthz)")
        try:
            arrays = decode(body, self.headers.get("Content-Type", ""), slot.inputs)
            outputs, seconds = slot.run(arrays)
            service.metrics.inference(slot.bundle_id, seconds)
            payload, kind = encode(outputs, slot.outputs, self.headers.get("Accept", ""), slot.bundle_id, seconds)
        finally:
            service.release(slot)
        self._send(200, payload, kind, {"X-Edgec-Bundle": slot.bundle_id})
        return 200, None

    def do_POST(self):
        path = self.path.split("?")[0]
        if path in ("/v1/infer", "/infer"):
            self._handle("infer", self._infer)
        else:
            self._handle("other", lambda: (self._error(404, f"no such endpoint {path!r}; POST /v1/infer"),
                                           (404, "not_found"))[1])


def read_token(path: str | None) -> str | None:
    if not path:
        return os.environ.get("EDGEC_SERVE_TOKEN") or None
    try:
        with open(path) as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if len(token) < 16:
        raise UsageError(f"--token-file {path}: the token must be at least 16 characters")
    return token
