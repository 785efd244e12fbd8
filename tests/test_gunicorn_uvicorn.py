"""End to end with uvicorn's Gunicorn workers (``uvicorn.workers`` and the
``uvicorn-worker`` package), the usual way FastAPI runs under Gunicorn:
real Gunicorn, real uvicorn, FastAPI and Starlette apps, real HTTP. Every
request is counted exactly like under the sync worker (method, status class,
duration, sizes, failures), and a worker class we cannot instrument is named
in one warning at start instead of showing silent zeros."""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import pytest

from gunicorn_runner import Gunicorn, labelled, value

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("fastapi") is None,
    reason="uvicorn and fastapi are test dependencies (pip install .[test])",
)

FASTAPI_APP = """
import asyncio

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, world!\\n"


@app.post("/", response_class=PlainTextResponse)
async def post(request: Request):
    await request.body()
    return "Hello, world!\\n"


@app.get("/slow", response_class=PlainTextResponse)
async def slow(seconds: float = 0.1):
    await asyncio.sleep(seconds)
    return "Hello, world!\\n"


@app.get("/missing")
async def missing():
    raise HTTPException(status_code=404, detail="not here")


@app.get("/fail", response_class=PlainTextResponse)
async def fail():
    return PlainTextResponse("try later\\n", status_code=503)


@app.get("/boom")
async def boom():
    raise RuntimeError("the test app fails on purpose")
"""

STARLETTE_APP = """
import asyncio

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    await request.body()
    if request.query_params.get("seconds"):
        await asyncio.sleep(float(request.query_params["seconds"]))
    return PlainTextResponse("Hello, world!\\n")


async def missing(request):
    return PlainTextResponse("not here\\n", status_code=404)


async def fail(request):
    return PlainTextResponse("try later\\n", status_code=503)


async def boom(request):
    raise RuntimeError("the test app fails on purpose")


app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"]), Route("/slow", hello),
                        Route("/missing", missing), Route("/fail", fail), Route("/boom", boom)])
"""

# (method, path, body, expected status), sent to every worker class
PLAN = (
    [("GET", "/", None, 200)] * 5
    + [("GET", "/slow?seconds=0.1", None, 200)]
    + [("GET", "/missing", None, 404)] * 3
    + [("GET", "/fail", None, 503)] * 2
    + [("GET", "/boom", None, 500)] * 2
    + [("POST", "/", b"0123456789", 200)]
    + [("DELETE", "/", None, 405)]
)
EXPECTED_REQUESTS = {
    ("GET", "2xx"): 6,
    ("GET", "4xx"): 3,
    ("GET", "5xx"): 4,
    ("POST", "2xx"): 1,
    ("DELETE", "4xx"): 1,
}
EXPECTED_FAILED = {"GET": 4}  # 2 x 503, 2 x raised (answered 500 by the framework)
EXPECTED_ERRORS = {"500": 2}  # the two exceptions that reached the server

UVICORN_WORKERS = [
    pytest.param("uvicorn.workers.UvicornWorker", id="uvicorn.workers.UvicornWorker"),
    pytest.param("uvicorn.workers.UvicornH11Worker", id="uvicorn.workers.UvicornH11Worker"),
    pytest.param(
        "uvicorn_worker.UvicornWorker",
        id="uvicorn_worker.UvicornWorker",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvicorn_worker") is None,
            reason="uvicorn-worker not installed",
        ),
    ),
    pytest.param(
        "uvicorn_worker.UvicornH11Worker",
        id="uvicorn_worker.UvicornH11Worker",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvicorn_worker") is None,
            reason="uvicorn-worker not installed",
        ),
    ),
]


def nonzero(samples, name: str, *labels: str) -> dict:
    out = {}
    for key, v in labelled(samples, name).items():
        if v:
            d = dict(key)
            out[tuple(d[label] for label in labels) if len(labels) != 1 else d[labels[0]]] = v
    return out


def start(tmp_path: Path, worker_class: str, source: str, **kw: object) -> Gunicorn:
    (tmp_path / "asgi_app.py").write_text(source)
    return Gunicorn(tmp_path, worker_class=worker_class, app="asgi_app:app", chdir=tmp_path, **kw)


def send(g: Gunicorn) -> list[int]:
    return [g.status(path, method=method, body=body) for method, path, body, _ in PLAN]


def check_counts(g: Gunicorn) -> None:
    total = len(PLAN)
    samples = g.wait_metrics(
        lambda s: (
            value(s, "gunicorn_worker_requests_total") >= total
            and value(s, "gunicorn_worker_request_duration_seconds_count") >= total
        ),
        what=f"{total} requests counted",
    )
    got = {
        "requests by (method, status)": nonzero(
            samples, "gunicorn_worker_requests_total", "method", "status"
        ),
        "failed by method": nonzero(samples, "gunicorn_worker_failed_requests_total", "method"),
        "error_handling by status": nonzero(
            samples, "gunicorn_worker_error_handling_total", "status"
        ),
        "duration _count by method": nonzero(
            samples, "gunicorn_worker_request_duration_seconds_count", "method"
        ),
        "duration _sum GET >= 0.1 (/slow)": value(
            samples, "gunicorn_worker_request_duration_seconds_sum", method="GET"
        )
        >= 0.1,
        "request size _count, _sum": (
            value(samples, "gunicorn_worker_request_size_bytes_count"),
            value(samples, "gunicorn_worker_request_size_bytes_sum"),
        ),
        "response size _count": value(samples, "gunicorn_worker_response_size_bytes_count"),
        "response size _sum >= the bodies": value(
            samples, "gunicorn_worker_response_size_bytes_sum"
        )
        >= 7 * 14,
    }
    expected = {
        "requests by (method, status)": EXPECTED_REQUESTS,
        "failed by method": EXPECTED_FAILED,
        "error_handling by status": EXPECTED_ERRORS,
        "duration _count by method": {"GET": 13, "POST": 1, "DELETE": 1},
        "duration _sum GET >= 0.1 (/slow)": True,
        "request size _count, _sum": (total, 10),  # 10: the POST body
        "response size _count": total,
        "response size _sum >= the bodies": True,
    }
    wrong = {
        k: f"got {got[k]!r}, expected {expected[k]!r}" for k in expected if got[k] != expected[k]
    }
    assert wrong == {}, g.log()[-3000:]
    time.sleep(0.5)  # nothing is counted late or twice
    assert value(g.samples(), "gunicorn_worker_requests_total") == total


@pytest.mark.parametrize("worker_class", UVICORN_WORKERS)
def test_fastapi_requests_are_counted_exactly(tmp_path: Path, worker_class: str) -> None:
    with start(tmp_path, worker_class, FASTAPI_APP) as g:
        assert send(g) == [status for *_, status in PLAN]
        check_counts(g)
        assert "not one the exporter can instrument" not in g.log()


def test_starlette_requests_are_counted_exactly(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with start(tmp_path, "uvicorn.workers.UvicornWorker", STARLETTE_APP) as g:
            assert send(g) == [status for *_, status in PLAN]
            check_counts(g)


UNKNOWN_WORKER = '''
import time

from gunicorn.workers.base import Worker


class HookLessWorker(Worker):
    """Serves nothing through Gunicorn's hooks (like a third-party server)."""

    def run(self):
        while self.alive:
            self.notify()
            time.sleep(0.2)
'''


def test_a_worker_class_we_cannot_instrument_is_named_once(tmp_path: Path) -> None:
    (tmp_path / "hookless.py").write_text(UNKNOWN_WORKER)
    (tmp_path / "asgi_app.py").write_text("def app(environ, start_response):\n    return []\n")
    g = Gunicorn(
        tmp_path,
        worker_class="hookless.HookLessWorker",
        app="asgi_app:app",
        chdir=tmp_path,
        wait_ready=False,
    )
    try:
        g.wait_serving()
        from gunicorn_runner import wait_for

        wait_for(
            lambda: "not one the exporter can instrument" in g.log(),
            10,
            message=lambda: f"the warning:\n{g.log()}",
        )
        time.sleep(0.5)
        log = g.log()
        assert log.count("not one the exporter can instrument") == 1
        assert "hookless.HookLessWorker" in log
    finally:
        g.stop()
