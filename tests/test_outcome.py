"""What a request's outcome is read as, by every way requests are recorded
(Gunicorn's request hooks and the WSGI/ASGI wrappers share these rules):
status lines, Content-Length in the WSGI environ, Gunicorn's request
headers and ASGI's, and the status Gunicorn answers for its parser's errors."""

from __future__ import annotations

import pytest
from gunicorn.http import errors

from gunicorn_prometheus_exporter.outcome import Outcome, error_status, request_bytes


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("200 OK", 200),
        ("404", 404),
        (" 503  Busy", 503),
        ("", 0),
        ("   ", 0),
        ("OK 200", 0),
        ("\u00b2\u00b2\u00b2 OK", 0),
    ],
)
def test_status_line(line: str, status: int) -> None:
    outcome = Outcome(None, "GET", 0.0)
    outcome.started(line, [])
    assert outcome.status == status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Content-Length", "12")], 12),
        ([("content-length", " 7 ")], 7),
        ([("CONTENT-LENGTH", "3"), ("Content-Length", "99")], 3),
        ([("Content-Length", "x")], None),
        ([("Content-Type", "text/plain")], None),
        (None, None),
    ],
)
def test_announced_body_length(headers: list[tuple[str, str]] | None, expected: int | None) -> None:
    outcome = Outcome(None, "GET", 0.0)
    outcome.started("200 OK", headers)
    assert outcome.expected() == expected


def test_request_bytes_from_each_server() -> None:
    assert (
        request_bytes({"CONTENT_LENGTH": "42"}, [("CONTENT-LENGTH", "7")]) == 42.0
    )  # WSGI environ first
    assert request_bytes({}, [("CONTENT-LENGTH", "7")]) == 7.0  # Gunicorn's request headers
    assert (
        request_bytes(None, [(b"content-length", b"5"), (b"content-length", b"6")]) == 5.0
    )  # ASGI
    assert request_bytes({"CONTENT_LENGTH": ""}, None) == 0.0
    assert request_bytes({"CONTENT_LENGTH": "many"}, None) == 0.0
    assert request_bytes(None, None) == 0.0


def test_status_of_gunicorn_parser_errors() -> None:
    assert error_status(errors.LimitRequestLine(9000, 4094)) == 414
    assert error_status(errors.LimitRequestHeaders("too many")) == 431
    assert error_status(errors.InvalidRequestLine("GET")) == 400
    assert error_status(errors.InvalidHeaderName("x y")) == 400
    assert error_status(RuntimeError("anything else")) == 500
