"""Request recording: the app of every worker is wrapped once
(post_worker_init), and each request is recorded with one native call as
soon as its outcome is known, before its last bytes leave (Gunicorn's
post_request hook runs after the answer was sent: a worker killed in
between would lose a request its client received). For some workers the
wrapper is the only way at all: gevent_pywsgi and tornado serve the WSGI
app with their own servers, uvicorn's workers serve the ASGI app with
uvicorn, and Gunicorn's ASGI worker passes no response to post_request.

``request_path`` tells, from the worker class alone, which way a worker's
requests are recorded, so that the master can warn at start about a class
that we cannot instrument instead of showing silent zeros.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

# How a worker class's requests reach us:
#   "hooks": Gunicorn's own WSGI workers (they call the request hooks and
#            handle_error); the app in worker.wsgi is wrapped as well;
#   "wsgi"/"asgi": the app in worker.wsgi is wrapped (its server skips the hooks);
#   "gunicorn-asgi": Gunicorn's ASGI worker, whose app is worker.asgi;
#   None: a class we do not know; its requests are not counted.
RequestPath = Literal["hooks", "wsgi", "asgi", "gunicorn-asgi"] | None

_HOOK_CALLING = {("gunicorn.workers.sync", "SyncWorker"), ("gunicorn.workers.gthread", "ThreadWorker"),
                 ("gunicorn.workers.base_async", "AsyncWorker")}
_OWN_SERVERS = {"GeventPyWSGIWorker": "wsgi", "TornadoWorker": "wsgi", "UvicornWorker": "asgi"}


def request_path(worker_class: type) -> RequestPath:
    """Which way requests of ``worker_class`` are recorded (see RequestPath)."""
    path: RequestPath = None
    for base in worker_class.__mro__:  # most derived first: the first match decides
        module = base.__module__
        if base.__name__ in _OWN_SERVERS and module.split(".")[0] in ("gunicorn", "uvicorn", "uvicorn_worker"):
            return _OWN_SERVERS[base.__name__]  # type: ignore[return-value]
        if (module, base.__name__) == ("gunicorn.workers.gasgi", "ASGIWorker"):
            return "gunicorn-asgi"
        if (module, base.__name__) in _HOOK_CALLING and path is None:
            path = "hooks"
    return path


def is_asgi3(app: Any) -> bool:
    """Whether ``app`` is an ASGI 3 application (uvicorn's own test)."""
    if inspect.isclass(app):
        return False  # ASGI 2: a class instantiated per connection
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)
    return inspect.iscoroutinefunction(call)


def _content_length(value: Any) -> float:
    try:
        return float(value) if value else 0.0
    except (TypeError, ValueError):
        return 0.0


class _Outcome:
    """One request's outcome, recorded once (one native call)."""

    __slots__ = ("recorder", "method", "request_bytes", "start", "status", "expected", "sent", "done")

    def __init__(self, recorder: Any, method: str, request_bytes: float) -> None:
        self.recorder = recorder
        self.method = method
        self.request_bytes = request_bytes
        self.start = time.perf_counter()
        self.status = 0
        self.expected: int | None = None  # the Content-Length the app announced
        self.sent = 0
        self.done = False

    def started(self, status_line: str, headers: Any) -> None:
        head = status_line.split(None, 1)[0] if status_line else ""
        self.status = int(head) if head.isdigit() else 0
        for name, value in headers or ():
            if name.lower() == "content-length" and str(value).strip().isdigit():
                self.expected = int(value)

    def completes(self, chunk: bytes) -> bool:
        """Counts ``chunk``; whether it completes the announced body."""
        self.sent += len(chunk)
        return self.expected is not None and self.sent >= self.expected

    def record(self, failed: bool, status: int = 0) -> None:
        if self.done:
            return
        self.done = True
        status = status or self.status
        self.recorder.record(self.method, status or 500, time.perf_counter() - self.start, self.request_bytes,
                             float(self.sent), failed or not status)


class WSGIRecorder:
    """Records every request of a WSGI app with one native call, as soon as
    its outcome is known and before its last bytes leave: when the body the
    app announced (Content-Length) is complete, when the body ends (a
    chunked one ends later, in the server), or when the app raises. So a
    worker killed at any moment has counted every response a client
    received in full. ``on_error`` is called when the app raises (for
    servers that do not count that themselves)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], recorder: Any, on_error: Callable[[], None]) -> None:
        self.app = app
        self.recorder = recorder
        self.on_error = on_error

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        outcome = _Outcome(self.recorder, environ.get("REQUEST_METHOD", "other"),
                           _content_length(environ.get("CONTENT_LENGTH")))

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            outcome.started(status_line, headers)
            return start_response(status_line, headers, exc_info) if exc_info else start_response(status_line, headers)

        try:
            body = self.app(environ, recording_start_response)
        except Exception:
            outcome.record(failed=True, status=500)
            self.on_error()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # The server sends the file itself (sendfile): known now.
            outcome.sent = outcome.expected or 0
            outcome.record(failed=False)
            return body
        return self._recorded(body, outcome)

    @staticmethod
    def _recorded(body: Iterable[bytes], outcome: _Outcome) -> Iterator[bytes]:
        failed = True
        try:
            for chunk in body:
                if not outcome.done and outcome.completes(chunk):
                    outcome.record(failed=False)  # before the last bytes go out
                yield chunk
            failed = False
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            outcome.record(failed)


class ASGIRecorder:
    """``on_error`` is called when an exception leaves the app (the server
    answers 500 unless the framework did)."""

    def __init__(self, app: Callable[..., Any], recorder: Any, on_error: Callable[[], None]) -> None:
        self.app = app
        self.recorder = recorder
        self.on_error = on_error

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        sent = 0

        async def recording_send(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
            elif message.get("type") == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        request_bytes = 0.0
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                request_bytes = _content_length(value.decode("latin-1"))
        failed = True
        try:
            await self.app(scope, receive, recording_send)
            failed = False
        except Exception:
            self.on_error()  # reached the server (a framework may have answered 500 first)
            raise
        finally:
            self.recorder.record(scope.get("method", "other"), status or 500, time.perf_counter() - start,
                                 request_bytes, float(sent), failed or not status)
