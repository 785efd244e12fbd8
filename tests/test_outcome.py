"""What a request's outcome is read as, by every way requests are recorded
(Gunicorn's request hooks and the WSGI/ASGI wrappers share these rules):
status lines, Content-Length in the WSGI environ, Gunicorn's request
headers and ASGI's, and the status Gunicorn answers for its parser's errors."""

from __future__ import annotations

import pytest
from gunicorn.http import errors

from gunicorn_prometheus_exporter.outcome import error_status, request_bytes, status_code


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("200 OK", 200),
        ("404", 404),
        (" 503  Busy", 503),
        ("200\u00a0OK", 200),  # any whitespace ends the code, as str.split() reads it
        (b"201 Created", 201),
        (302, 302),
        ("", 0),
        ("   ", 0),
        ("OK 200", 0),
        ("2xx", 0),
        ("\u00b2\u00b2\u00b2 OK", 0),
        ("9" * 40 + " OK", 0),
        (None, 0),
        (2.5, 0),
    ],
)
def test_status_line(line: object, status: int) -> None:
    assert status_code(line) == status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Content-Length", "12")], 12),
        ([("content-length", " 7 ")], 7),
        ([("CONTENT-LENGTH", "3"), ("Content-Length", "99")], 3),
        ([["content-length", b"4"]], 4),
        ([("Content-Length", 5)], 5),
        ([("Content-Length", "x")], 0),
        ([("Content-Length", "-5")], 0),
        ([("Content-Length", "1e3")], 0),  # a Content-Length is digits (RFC 9110)
        ([("Content-Length", "1 2")], 0),
        ([("Content-Type", "text/plain")], 0),
        ([("Content-Length",)], 0),
        ("not headers", 0),
        (None, 0),
    ],
)
def test_content_length_of_headers(headers: object, expected: int) -> None:
    assert request_bytes(None, headers) == expected


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
