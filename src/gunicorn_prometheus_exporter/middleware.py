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
from collections.abc import Callable
from typing import Any, Literal

from . import _native
from .tracing import TRACE

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


def wsgi_recorder(app: Any, recorder: Any, on_error: Callable[[], None] | None) -> Any:
    """``app`` wrapped: every request recorded with one native call as soon
    as its outcome is known and before its last bytes leave (the app
    returned a list or tuple, the body it announced with Content-Length is
    complete, the body ended, or the app raised), so that a worker killed
    at any moment has counted every response a client received in full.
    ``on_error`` is called when the app raises (for servers that do not
    count that themselves). The wrapper is native (wsgi_recorder.cpp): in
    Python it cost a sync worker 6% of its throughput on a hello world."""
    return _native.WSGIRecorder(app, recorder, TRACE, on_error)


class ASGIRecorder:
    """Records every HTTP request of an ASGI 3 app with one native call,
    when the app returns. ``on_error`` is called when an exception leaves the app (the server
    answers 500 unless the framework did)."""

    def __init__(
        self, app: Callable[..., Any], recorder: Any, on_error: Callable[[], None]
    ) -> None:
        self.app = app
        self.on_error = on_error
        self.target = _native.RecordingTarget(recorder, TRACE)

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        # The status, body size and trace are noted natively on the way to send.
        recording = self.target(scope, send)
        failed = True
        try:
            await self.app(scope, receive, recording)
            failed = False
        except Exception:
            self.on_error()  # reached the server (a framework may have answered 500 first)
            raise
        finally:
            recording.record(failed)
