"""The native WSGI wrapper (wsgi_recorder.cpp) and ASGI send
(request_outcome.cpp) called directly, as a WSGI server and an ASGI app
call them, with a real native recorder writing to a multiprocess directory:
what each request is recorded as, and when - before its last bytes leave,
exactly once, whatever the app and the server do."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.metrics import Metrics, create
from gunicorn_prometheus_exporter.middleware import ASGIRecorder, wsgi_recorder
from gunicorn_prometheus_exporter.tracing import native_trace
from gunicorn_prometheus_exporter.worker_hooks import _make_recorder


class Recorded:
    """The request metrics, read back from their native values."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def requests(self, method: str = "GET", status: str = "2xx") -> float:
        return self.metrics.worker_requests.labels(method, status)._value.get()

    def failed(self, method: str = "GET") -> float:
        return self.metrics.worker_failed_requests.labels(method)._value.get()

    def response_bytes(self) -> float:
        return self.metrics.worker_response_size._sum.get()

    def request_bytes(self) -> float:
        return self.metrics.worker_request_size._sum.get()

    def in_flight(self) -> float:
        return self.metrics.worker_in_flight._value.get()

    def duration_exemplars(self, method: str = "GET") -> list[Any]:
        buckets = self.metrics.worker_request_duration.labels(method)._buckets
        return [b.get_exemplar() for b in buckets if b.get_exemplar() is not None]


@pytest.fixture
def recorded(mp_dir: Path) -> Iterator[Recorded]:
    yield Recorded(create())
    # Values alive when the next test enables its directory would be made
    # there too: gone before (the recorders' closures are cycles).
    gc.collect()


@pytest.fixture
def recorder(recorded: Recorded) -> Any:
    return _make_recorder(recorded.metrics)


class Server:
    """A WSGI server's side of a request: its start_response, and the body
    iterated the way Gunicorn's sync worker does it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.calls.append((status, headers) if exc_info is None else (status, headers, exc_info))
        return lambda data: None  # WSGI's write()

    def environ(self, **extra: Any) -> dict[str, Any]:
        return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", **extra}


def serve(app: Any, environ: dict[str, Any], server: Server) -> list[bytes]:
    body = app(environ, server.start_response)
    try:
        return list(body)
    finally:
        if hasattr(body, "close"):
            body.close()


class Body:
    """An app's body with a close() that counts its calls."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_after:
                raise ValueError("the body failed")
            yield chunk

    def close(self) -> None:
        self.closed += 1


def test_list_and_tuple_bodies_are_recorded_before_they_leave(
    recorder: Any, recorded: Recorded
) -> None:
    for kind in (list, tuple):

        def app(environ: dict[str, Any], start_response: Any, kind: Any = kind) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return kind([b"hello", b", world"])

        wrapped = wsgi_recorder(app, recorder, None)
        body = wrapped(Server().environ(CONTENT_LENGTH="3"), Server().start_response)
        assert type(body) is kind  # handed over as it is
        assert recorded.in_flight() == 0  # recorded on return, before the server sends it
    assert recorded.requests() == 2
    assert recorded.response_bytes() == 2 * len(b"hello, world")
    assert recorded.request_bytes() == 2 * 3
    assert recorded.failed() == 0


def test_announced_body_is_recorded_with_its_last_chunk(recorder: Any, recorded: Recorded) -> None:
    chunks = [b"ab", b"cd", b"ef"]
    app_body = Body(chunks)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("201 Created", [("content-length", " 6 ")])
        return app_body

    server = Server()
    body = wsgi_recorder(app, recorder, None)(server.environ(), server.start_response)
    assert [next(body), next(body)] == chunks[:2]
    assert recorded.in_flight() == 1 and recorded.requests() == 0
    assert next(body) == chunks[2]
    assert recorded.requests() == 1 and recorded.in_flight() == 0  # before the server sends it
    assert list(body) == []
    body.close()
    body.close()
    assert app_body.closed == 1  # once, however often the server closes
    assert recorded.requests() == 1 and recorded.response_bytes() == 6
    assert server.calls == [("201 Created", [("content-length", " 6 ")])]


def test_streamed_body_is_recorded_when_it_ends(recorder: Any, recorded: Recorded) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("404 Not Found", [])  # with the first chunk, as generators do
        yield b"not"
        yield b" here"

    assert serve(wsgi_recorder(app, recorder, None), Server().environ(), Server()) == [
        b"not",
        b" here",
    ]
    assert recorded.requests(status="4xx") == 1
    assert recorded.response_bytes() == 8
    assert recorded.failed() == 0 and recorded.in_flight() == 0


def test_body_that_fails_is_recorded_failed_and_closed(recorder: Any, recorded: Recorded) -> None:
    app_body = Body([b"a", b"b", b"c"], fail_after=2)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return app_body

    with pytest.raises(ValueError, match="the body failed"):
        serve(wsgi_recorder(app, recorder, None), Server().environ(), Server())
    assert recorded.requests() == 1 and recorded.failed() == 1
    assert recorded.response_bytes() == 2
    assert app_body.closed == 1 and recorded.in_flight() == 0


def test_app_that_raises_is_a_failed_500(recorder: Any, recorded: Recorded) -> None:
    errors: list[int] = []
    problem = RuntimeError("the app fails")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise problem

    wrapped = wsgi_recorder(app, recorder, lambda: errors.append(1))
    with pytest.raises(RuntimeError) as raised:
        wrapped(Server().environ(REQUEST_METHOD="POST"), Server().start_response)
    assert raised.value is problem
    assert recorded.requests("POST", "5xx") == 1 and recorded.failed("POST") == 1
    assert errors == [1] and recorded.in_flight() == 0

    def exits(environ: dict[str, Any], start_response: Any) -> Any:
        raise SystemExit(1)  # Gunicorn's sync worker on a timeout: no error of the app

    with pytest.raises(SystemExit):
        wsgi_recorder(exits, recorder, lambda: errors.append(2))(
            Server().environ(), Server().start_response
        )
    assert recorded.requests("GET", "5xx") == 1 and errors == [1]
    problem.__traceback__ = None  # its frames hold this test's metrics: not past the test


def test_body_the_server_drops_is_recorded_failed(recorder: Any, recorded: Recorded) -> None:
    app_bodies = [Body([b"x"]), Body([b"y"])]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return app_bodies.pop(0)

    wrapped = wsgi_recorder(app, recorder, None)
    closed = wrapped(Server().environ(), Server().start_response)
    closed.close()  # the client went away before a chunk was sent
    assert recorded.failed() == 1 and app_bodies == [app_bodies[0]]
    dropped = wrapped(Server().environ(), Server().start_response)
    assert recorded.in_flight() == 1
    del dropped  # neither iterated nor closed: no request stays in flight for ever
    assert recorded.in_flight() == 0
    assert recorded.requests() == 2 and recorded.failed() == 2


def test_file_wrapper_is_counted_by_its_announced_size(recorder: Any, recorded: Recorded) -> None:
    class FileWrapper:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Iterator[bytes]:
            raise AssertionError("the server sends a file itself")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "1234")])
        return environ["wsgi.file_wrapper"](b"...")

    server = Server()
    body = wsgi_recorder(app, recorder, None)(
        server.environ(**{"wsgi.file_wrapper": FileWrapper}), server.start_response
    )
    assert type(body) is FileWrapper  # the server still sees its own wrapper (sendfile)
    assert recorded.requests() == 1 and recorded.response_bytes() == 1234


def test_start_response_is_forwarded_as_called(recorder: Any, recorded: Recorded) -> None:
    info = (ValueError, ValueError("late"), None)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [("A", "1")])
        assert callable(write)  # the server's write() comes back
        start_response("500 Internal Server Error", [], exc_info=info)
        start_response("503 Unavailable", [], None)
        return [b""]

    server = Server()
    wsgi_recorder(app, recorder, None)(server.environ(), server.start_response)
    assert server.calls == [
        ("200 OK", [("A", "1")]),
        ("500 Internal Server Error", [], info),
        ("503 Unavailable", []),
    ]
    assert recorded.requests(status="5xx") == 1  # the last status the app gave
    with pytest.raises(TypeError):
        wsgi_recorder(app, recorder, None)(server.environ())


@pytest.mark.parametrize(
    ("environ", "method"),
    [({"REQUEST_METHOD": "PATCH"}, "PATCH"), ({}, "other"), ({"REQUEST_METHOD": 7}, "other")],
)
def test_method_of_the_environ(
    recorder: Any, recorded: Recorded, environ: dict[str, Any], method: str
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("204 No Content", [])
        return []

    wsgi_recorder(app, recorder, None)(environ, Server().start_response)
    assert recorded.requests(method, "2xx") == 1


def test_recording_failure_never_fails_the_request(mp_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("GUNICORN_PROMETHEUS_STATUS_LABEL", "code")  # series made at first use
    metrics = create()
    recorder = _make_recorder(metrics)

    def no_series(*labels: str) -> Any:
        raise OSError("no room for a new series")

    monkeypatch.setattr(metrics.worker_requests, "labels", no_series)
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"fine"]

    assert wsgi_recorder(app, recorder, None)(Server().environ(), Server().start_response) == [
        b"fine"
    ]
    assert len(reported) == 1 and "no room for a new series" in str(reported[0].exc_value)
    assert "recording a request" in str(reported[0].object)
    del metrics, recorder, reported
    gc.collect()  # as the recorded fixture does


def test_a_request_dropped_while_an_error_propagates_keeps_that_error(
    recorder: Any, recorded: Recorded
) -> None:
    """A request's native objects record it when they go (plain_type.hpp),
    which reads the active span through Python: inside a span, while an
    error leaves the frame that drops them, that error must stay the one
    raised (no Python call may see it set, nor clear it)."""
    trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = trace.TracerProvider().get_tracer("test")
    wrapped = wsgi_recorder(lambda environ, start_response: Body([b"x"]), recorder, None)
    target = _native.RecordingTarget(recorder, native_trace())

    with tracer.start_as_current_span("request"), pytest.raises(TypeError, match="divmod"):
        # divmod() raises with both on the caller's stack, which the error's
        # way out clears (a traceback keeps frames, not that stack).
        divmod(wrapped(Server().environ(), Server().start_response), target({}, print))
    assert recorded.failed() == 1 and recorded.failed("other") == 1 and recorded.in_flight() == 0
    assert recorded.duration_exemplars(), "the span was read as they went"


def test_a_request_s_objects_cannot_be_made_from_python() -> None:
    for name in ("WSGIStartResponse", "WSGIRecordedBody", "RecordingSend"):
        with pytest.raises(TypeError, match="cannot create"):
            getattr(_native, name)()  # it would hold no request


def test_wrong_recorder_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match="recorder must be"):
        wsgi_recorder(lambda e, s: [], object(), None)
    with pytest.raises(TypeError, match="recorder must be"):
        ASGIRecorder(lambda scope, receive, send: None, object(), lambda: None)


def test_asgi_send_records_status_sizes_and_returns_the_servers_awaitable(
    recorder: Any, recorded: Recorded
) -> None:
    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "headers": [(b"content-length", b"11")]}
    target = _native.RecordingTarget(recorder, native_trace())
    send = target(scope, server_send)

    async def app() -> None:
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"teapot", "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    asyncio.run(app())
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert recorded.in_flight() == 1  # until the app returned
    send.record(False)
    send.record(True)  # once only
    assert recorded.requests("PUT", "4xx") == 1 and recorded.failed("PUT") == 0
    assert recorded.response_bytes() == 7 and recorded.request_bytes() == 11
    assert recorded.in_flight() == 0


def test_request_duration_carries_the_trace_of_the_app(recorder: Any, recorded: Recorded) -> None:
    trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = trace.TracerProvider().get_tracer("test")
    ids: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        with tracer.start_as_current_span("request") as span:
            ids.append(f"{span.get_span_context().trace_id:032x}")
            start_response("200 OK", [])
        return [b"traced"]

    def untraced(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"plain"]

    wsgi_recorder(untraced, recorder, None)(Server().environ(), Server().start_response)
    assert recorded.duration_exemplars() == []
    wsgi_recorder(app, recorder, None)(Server().environ(), Server().start_response)
    (exemplar,) = recorded.duration_exemplars()
    assert exemplar.labels["trace_id"] == ids[0] and len(exemplar.labels["span_id"]) == 16


class Id(int):
    """An id that is an int, but not exactly one (formatted by format())."""


def odd_span(trace_id: int, span_id: int) -> Any:
    """A Span of an app's own, whose context says valid whatever its ids."""
    from types import SimpleNamespace

    from opentelemetry import trace

    class OddSpan(trace.NonRecordingSpan):
        def get_span_context(self) -> Any:
            return SimpleNamespace(is_valid=True, trace_id=trace_id, span_id=span_id)

    return OddSpan(trace.INVALID_SPAN_CONTEXT)


def test_native_trace_agrees_with_current_exemplar() -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace.propagation import _SPAN_KEY

    from gunicorn_prometheus_exporter.tracing import _tuple_span_context, current_exemplar

    tracer = TracerProvider().get_tracer("test")
    # The span read from OpenTelemetry's context variable, its context as the tuple it is.
    assert _tuple_span_context() is trace.SpanContext
    quick = native_trace()
    through_api = _native.CurrentTrace(trace.get_current_span, trace.Span, None, None)
    seen: list[Any] = []

    def api_exemplar() -> dict[str, str] | None:  # the oracle: OpenTelemetry's API itself
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    def check() -> None:
        seen.append(api_exemplar())
        assert quick.exemplar() == through_api.exemplar() == current_exemplar() == seen[-1]

    check()  # no span
    with tracer.start_as_current_span("outer"):
        check()
        with trace.use_span(trace.INVALID_SPAN):
            check()  # a span is set, but not a valid one
        token = context.attach(context.set_value(_SPAN_KEY, "not a span"))
        check()  # what is not a Span counts as none
        context.detach(token)
        remote = trace.SpanContext(0xABC, 0xDEF, is_remote=True)
        with trace.use_span(trace.NonRecordingSpan(remote)):
            check()
        # Ids at the edges of the 64-bit words they are written from.
        for ids in [(2**128 - 1, 2**64 - 1), (2**64, 1), (2**64 - 1, 2**63)]:
            with trace.use_span(trace.NonRecordingSpan(trace.SpanContext(*ids, False))):
                check()
        # A Span of its own whose ids are not plain ints in range: as format() writes them.
        for odd in [(Id(2**64 + 5), Id(7)), (2**130, -3), (-1, 2**64)]:
            with trace.use_span(odd_span(*odd)):
                check()

        async def in_a_task() -> None:
            check()  # a task runs in a copy of the context

        asyncio.run(in_a_task())
    check()
    assert [e is None for e in seen] == [True, False, True, True] + [False] * 8 + [True]
    assert seen[4] == {"trace_id": f"{0xABC:032x}", "span_id": f"{0xDEF:016x}"}
    assert seen[5] == {"trace_id": "f" * 32, "span_id": "f" * 16}
    assert seen[9] == {"trace_id": f"{2**130:032x}", "span_id": "-000000000000003"}
