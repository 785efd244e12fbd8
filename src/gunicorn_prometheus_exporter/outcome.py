"""A request's outcome read from what the servers hand us, in one place for
every way requests are recorded (Gunicorn's request hooks, the WSGI and
ASGI wrappers): the status code, the body sizes, and the one native call
that records it all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .tracing import current_exemplar


def _status_code(status: object) -> int:
    """The status code in ``status``: an int, or a status line such as
    ``"200 OK"`` (str or bytes); 0 when there is none."""
    if isinstance(status, int):
        return status
    if isinstance(status, bytes):
        status = status.decode("latin-1")
    if isinstance(status, str):
        head = status.split(None, 1)[:1]
        if head and head[0].isascii() and head[0].isdigit():
            return int(head[0])
    return 0


def response_status(resp: Any) -> int:
    """The status code of a Gunicorn response (``status_code``, or ``status``)."""
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else _status_code(getattr(resp, "status", None))


def _header(headers: Iterable[tuple[Any, Any]] | None, name: str) -> Any:
    """The first value of header ``name`` (lower case) in ``headers``, whose
    names are str in any case or bytes (ASGI); None when absent."""
    raw = name.encode("latin-1")
    for key, value in headers or ():
        if (key.lower() == raw) if isinstance(key, bytes) else (str(key).lower() == name):
            return value
    return None


def _byte_count(value: object) -> float:
    """A Content-Length value as bytes; 0 when absent or not a number."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        return float(value) if value else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def request_bytes(environ: object, headers: Iterable[tuple[Any, Any]] | None) -> float:
    """The request body size: the WSGI environ's CONTENT_LENGTH, else the
    Content-Length among the request's headers."""
    length = environ.get("CONTENT_LENGTH") if isinstance(environ, dict) else None
    return _byte_count(length if length is not None else _header(headers, "content-length"))


def record(
    recorder: Any,
    method: str,
    status: int,
    seconds: float,
    received: float,
    sent: float,
    failed: bool,
    exemplar: dict[str, str] | None = None,
) -> None:
    """One native call records a request (ending the one ``recorder.start()``
    began). No status: the app raised before answering, the server answers
    500 and the request failed. ``exemplar``: the labels of the duration's
    exemplar (the request's trace), or None."""
    recorder.record(
        method, status or 500, seconds, received, float(sent), failed or not status, exemplar
    )


class Outcome:
    """One request's outcome, recorded once, as soon as it is known."""

    __slots__ = (
        "done",
        "exemplar",
        "headers",
        "method",
        "recorder",
        "request_bytes",
        "sent",
        "start",
        "status",
        "traced",
    )

    def __init__(self, recorder: Any, method: str, request_bytes: float) -> None:
        if recorder is not None:
            recorder.start()  # in flight until record()
        self.recorder = recorder
        self.method = method
        self.request_bytes = request_bytes
        self.start = time.perf_counter()
        self.status = 0
        self.headers: Any = None  # the response's, as the app gave them
        self.sent = 0
        self.done = False
        self.exemplar: dict[str, str] | None = None
        self.traced = False  # the exemplar was looked up (once a request: it costs 1.5 us)

    def take_exemplar(self) -> None:
        """Called by the app, inside its spans: the trace of the request."""
        self.exemplar = current_exemplar()
        self.traced = True

    def started(self, status_line: str, headers: Any) -> None:
        """The app started its response (WSGI's start_response)."""
        self.take_exemplar()
        self.status = _status_code(status_line)
        self.headers = headers

    def expected(self) -> int | None:
        """The body size the app announced (Content-Length), if any."""
        announced = str(_header(self.headers, "content-length") or "").strip()
        return int(announced) if announced.isascii() and announced.isdigit() else None

    def record(self, failed: bool, status: int = 0) -> None:
        if self.done:
            return
        self.done = True
        record(
            self.recorder,
            self.method,
            status or self.status,
            time.perf_counter() - self.start,
            self.request_bytes,
            self.sent,
            failed,
            self.exemplar if self.traced else current_exemplar(),
        )


def error_status(exc: BaseException) -> int:
    """The status Gunicorn answers for an exception of its request parser
    (``handle_error``): 400 for a malformed request, 500 for anything else."""
    from gunicorn.http import errors

    for name, status in (
        ("LimitRequestLine", 414),
        ("LimitRequestHeaders", 431),
        ("ForbiddenProxyRequest", 403),
        ("UnsupportedTransferCoding", 501),
        ("ExpectationFailed", 417),
    ):
        cls = getattr(errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    client_errors = tuple(
        getattr(errors, n)
        for n in (
            "InvalidRequestLine",
            "InvalidRequestMethod",
            "InvalidHTTPVersion",
            "InvalidHeader",
            "InvalidHeaderName",
            "InvalidProxyLine",
            "InvalidSchemeHeaders",
            "ObsoleteFolding",
            "InvalidChunkSize",
            "ChunkMissingTerminator",
            "InvalidChunkExtension",
        )
        if hasattr(errors, n)
    )
    return 400 if isinstance(exc, client_errors) else 500
