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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from .outcome import Outcome, request_bytes

# How a worker class's requests reach us:
#   "hooks": Gunicorn's own WSGI workers (they call the request hooks and
#            handle_error); the app in worker.wsgi is wrapped as well;
#   "wsgi"/"asgi": the app in worker.wsgi is wrapped (its server skips the hooks);
#   "gunicorn-asgi": Gunicorn's ASGI worker, whose app is worker.asgi;
#   None: a class we do not know; its requests are not counted.
RequestPath = Literal["hooks", "wsgi", "asgi", "gunicorn-asgi"] | None

_HOOK_CALLING = {
    ("gunicorn.workers.sync", "SyncWorker"),
    ("gunicorn.workers.gthread", "ThreadWorker"),
    ("gunicorn.workers.base_async", "AsyncWorker"),
}
_OWN_SERVERS = {"GeventPyWSGIWorker": "wsgi", "TornadoWorker": "wsgi", "UvicornWorker": "asgi"}


def request_path(worker_class: type) -> RequestPath:
    """Which way requests of ``worker_class`` are recorded (see RequestPath)."""
    path: RequestPath = None
    for base in worker_class.__mro__:  # most derived first: the first match decides
        module = base.__module__
        if base.__name__ in _OWN_SERVERS and module.split(".")[0] in (
            "gunicorn",
            "uvicorn",
            "uvicorn_worker",
        ):
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
    # The __call__ method itself (callable() would only say yes or no).
    plain = inspect.isfunction(app) or inspect.ismethod(app)
    call = app if plain else getattr(app, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


class WSGIRecorder:
    """Records every request of a WSGI app with one native call, as soon as
    its outcome is known and before its last bytes leave: when the body the
    app announced (Content-Length) is complete, when the body ends (a
    chunked one ends later, in the server), or when the app raises. So a
    worker killed at any moment has counted every response a client
    received in full. ``on_error`` is called when the app raises (for
    servers that do not count that themselves)."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], recorder: Any, on_error: Callable[[], None]
    ) -> None:
        self.app = app
        self.recorder = recorder
        self.on_error = on_error

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        outcome = Outcome(
            self.recorder, environ.get("REQUEST_METHOD", "other"), request_bytes(environ, None)
        )

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            outcome.started(status_line, headers)
            return (
                start_response(status_line, headers, exc_info)
                if exc_info
                else start_response(status_line, headers)
            )

        try:
            body = self.app(environ, recording_start_response)
        except Exception:
            outcome.record(failed=True, status=500)
            self.on_error()
            raise
        if type(body) is list or type(body) is tuple:  # exactly these (no close())
            # The whole body is here: recorded now, before any of it leaves.
            outcome.sent = sum(map(len, body))
            outcome.record(failed=False)
            return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # The server sends the file itself (sendfile): known now.
            outcome.sent = outcome.expected() or 0
            outcome.record(failed=False)
            return body
        return self._recorded(body, outcome)

    @staticmethod
    def _recorded(body: Iterable[bytes], outcome: Outcome) -> Iterator[bytes]:
        failed = True
        expected: int | None = None
        looked = False  # start_response may come with the first chunk
        try:
            for chunk in body:
                if not looked and outcome.headers is not None:
                    expected, looked = outcome.expected(), True
                outcome.sent += len(chunk)
                if not outcome.done and expected is not None and outcome.sent >= expected:
                    outcome.record(failed=False)  # before the last bytes go out
                yield chunk
            failed = False
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            outcome.record(failed)


class ASGIRecorder:
    """Records every HTTP request of an ASGI 3 app with one native call,
    when the app returns. ``on_error`` is called when an exception leaves the app (the server
    answers 500 unless the framework did)."""

    def __init__(
        self, app: Callable[..., Any], recorder: Any, on_error: Callable[[], None]
    ) -> None:
        self.app = app
        self.recorder = recorder
        self.on_error = on_error

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        outcome = Outcome(
            self.recorder, scope.get("method", "other"), request_bytes(None, scope.get("headers"))
        )

        async def recording_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                outcome.status = int(message.get("status", 0))
                outcome.take_exemplar()  # sent by the app, inside its spans
            elif message.get("type") == "http.response.body":
                outcome.sent += len(message.get("body", b""))
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, recording_send)
            failed = False
        except Exception:
            self.on_error()  # reached the server (a framework may have answered 500 first)
            raise
        finally:
            outcome.record(failed)
