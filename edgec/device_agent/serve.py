"""JSON-lines request/response on stdin/stdout, for a long-lived SSH session: load once, benchmark many times.

Each request is one line ``{"id": 1, "op": "info|check|load|bench|quit", ...}``; each response one line
``{"id": 1, "ok": true, "result": {...}}`` or ``{"id": 1, "ok": false, "error": {...}}``.
``check``/``load`` take ``bundle`` and ``threads``; ``bench`` takes ``bundle`` and the BenchOptions fields
(``runs``, ``warmup``, ``threads``, ``duration_s``, ``power``, ...) and reuses a model ``load`` kept.

When the client goes away (its SSH connection closed: Ctrl-C, a farm deadline, a dropped link that sshd noticed)
the agent exits at once with HANGUP_EXIT, even in the middle of a benchmark: sshd closes the read end of the
agent's stdout, which ``poll`` reports as an error on that descriptor. End of stdin alone is not a hang-up:
``agent serve < requests.jsonl`` answers every request. A link that dies silently (no FIN reaches the device, so
sshd keeps the session) is caught by ``serve --heartbeat S``: the client sends a blank line every few seconds
while it waits, and the agent exits when none came for S seconds.

Requests are input from the other end of a connection: a line longer than ``MAX_REQUEST_BYTES`` is skipped
(not buffered) and answered with an error, JSON nested deeper than ``MAX_REQUEST_DEPTH`` is an error, and every
field is checked before it is used; none of these ends the session.
"""

from __future__ import annotations

import json
import os
import queue
import select
import threading
import time

from edgec.errors import UsageError
from edgec.manifest import loads_bounded

__all__ = ["HANGUP_EXIT", "MAX_REQUEST_BYTES", "MAX_REQUEST_DEPTH", "Server", "serve"]

HANGUP_EXIT = 129  # as a process killed by SIGHUP reports itself
MAX_REQUEST_BYTES = 1 << 20  # a real request is a few hundred bytes
MAX_REQUEST_DEPTH = 16
_OVERSIZED = "\0oversized\n"  # what _bounded_lines yields in place of a line over the limit


class Server:
    """The state of one session: models kept loaded, by (bundle path, threads)."""

    def __init__(self):
        self.loaded = {}

    def _key(self, request: dict) -> tuple:
        from edgec.device_agent.options import BenchOptions

        bundle = request.get("bundle")
        if not isinstance(bundle, str) or not bundle or "\0" in bundle:
            raise UsageError(f"op {str(request.get('op'))[:40]!r}: needs \"bundle\": a bundle directory path")
        threads = request.get("threads")
        BenchOptions(threads=threads)  # the same check as the bench options'
        return bundle, threads

    def handle(self, request: dict) -> dict:
        from edgec.device_agent import bench, cli

        op = request.get("op")
        if op == "info":
            return cli.info()
        if op == "check":
            return bench.check_bundle(*self._key(request))
        if op == "load":
            key = self._key(request)
            model = self.loaded[key] = bench.load_model(*key)
            return {"bundle_id": model.bundle.bundle_id, "load_s": model.load_s,
                    "first_inference_s": model.first_inference_s, "runtime": model.runtime_doc()}
        if op == "bench":
            key = self._key(request)
            options = {k: v for k, v in request.items() if k not in ("id", "op", "bundle")}
            model = self.loaded.get(key)
            if model is not None:
                model.bundle.check_files()  # the files may have changed since it was loaded
            return bench.run_bench(key[0], options, loaded=model)
        raise UsageError(f"unknown op {str(op)[:40]!r}; known: info, check, load, bench, quit")


def _respond(out, doc: dict) -> None:
    out.write(json.dumps(doc, sort_keys=True) + "\n")
    out.flush()


def exit_when_reader_leaves(stream) -> threading.Thread | None:
    """Watch ``stream`` (a pipe, socket or terminal) from a daemon thread and end the process when its reader is
    gone; None where that cannot be watched (no ``poll``, or no file descriptor)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    if not hasattr(select, "poll"):
        return None

    def watch():
        poller = select.poll()
        poller.register(fd, 0)  # no events asked for: poll still reports POLLERR / POLLHUP / POLLNVAL
        while True:
            for _, event in poller.poll():
                if event & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    os._exit(HANGUP_EXIT)  # nobody can read a result any more; the benchmark is moot

    thread = threading.Thread(target=watch, name="edgec-agent-hangup", daemon=True)
    thread.start()
    return thread


def _bounded_lines(stdin, limit: int = MAX_REQUEST_BYTES):
    """stdin's lines, each read at most ``limit`` characters at a time: a longer line is skipped to its end
    and yields ``_OVERSIZED`` instead (memory stays bounded whatever the client sends)."""
    while True:
        line = stdin.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or (line.endswith("\n") and len(line) == limit + 1):
            yield line
            continue
        while line and not line.endswith("\n"):
            line = stdin.readline(limit + 1)
        yield _OVERSIZED


def _lines(stdin, heartbeat: float | None):
    """stdin's lines. With ``heartbeat``, a daemon thread reads them (so input keeps flowing while a request
    runs) and ends the process when a request has run ``heartbeat`` seconds with no line, blank ones included,
    from the client. Between requests the client may be busy elsewhere (pushing a bundle): no limit then."""
    if not heartbeat:
        yield from _bounded_lines(stdin)
        return
    lines: queue.Queue = queue.Queue()
    state = {"last": time.monotonic(), "busy": False}

    def read():
        for line in _bounded_lines(stdin):
            state["last"] = time.monotonic()
            if line.strip():
                lines.put(line)
        lines.put(None)

    def watch():
        while not (state["busy"] and time.monotonic() - state["last"] > heartbeat):
            time.sleep(min(1.0, heartbeat / 4))
        os._exit(HANGUP_EXIT)  # the client went silent mid-request: its link died without anyone closing it

    threading.Thread(target=read, name="edgec-agent-stdin", daemon=True).start()
    threading.Thread(target=watch, name="edgec-agent-heartbeat", daemon=True).start()
    while (line := lines.get()) is not None:
        state["last"], state["busy"] = time.monotonic(), True
        yield line
        state["busy"] = False


def serve(stdin, stdout, heartbeat: float | None = None) -> None:
    """Answer requests until ``quit`` or end of input; exit at once when ``stdout``'s reader goes away, and after
    ``heartbeat`` seconds without input (the client sends blank lines while it waits)."""
    from edgec.device_agent.cli import error_doc

    exit_when_reader_leaves(stdout)
    server = Server()
    for line in _lines(stdin, heartbeat):
        if not line.strip():
            continue
        try:
            if line is _OVERSIZED:
                raise ValueError(f"longer than {MAX_REQUEST_BYTES} bytes")
            request = loads_bounded(line, MAX_REQUEST_BYTES + 1, MAX_REQUEST_DEPTH)
        except ValueError as exc:
            _respond(stdout, {"id": None, "ok": False,
                              "error": error_doc(UsageError(f"request is not valid JSON: {exc}"))})
            continue
        request_id = request.get("id") if isinstance(request, dict) else None
        if not (request_id is None or (isinstance(request_id, (int, str)) and len(str(request_id)) <= 64)):
            request_id = None
        if isinstance(request, dict) and request.get("op") == "quit":
            _respond(stdout, {"id": request_id, "ok": True, "result": {}})
            return
        try:
            if not isinstance(request, dict):
                raise UsageError("each request must be a JSON object with \"op\"")
            _respond(stdout, {"id": request_id, "ok": True, "result": server.handle(request)})
        except Exception as exc:  # a failed request must not end the session
            _respond(stdout, {"id": request_id, "ok": False, "error": error_doc(exc)})
