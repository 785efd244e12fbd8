"""A request's outcome read from what the servers hand us. The rules (status
lines, Content-Length in a WSGI environ or in header lists of str or bytes,
no status counting as a failed 500) are native, in one place for every way
requests are recorded (request_outcome.cpp); here are what only Python can
read: Gunicorn's response objects and its parser's exceptions.
"""

from __future__ import annotations

from typing import Any

from ._native import request_bytes, status_code

__all__ = ["error_status", "request_bytes", "response_status", "status_code"]


def response_status(resp: Any) -> int:
    """The status code of a Gunicorn response (``status_code``, or ``status``)."""
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else status_code(getattr(resp, "status", None))


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
