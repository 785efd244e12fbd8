"""Benchmark: what the exporter adds to one request in Gunicorn's sync worker,
measured request by request.

Throughput on a shared machine moves by 10% from one run of a server to the
next (bench_gunicorn.py shows it with a control row), more than the cost we
look for. Here the cost is taken where it is paid, with the machine's drift
cancelled: in one process, two real ``SyncWorker`` objects of Gunicorn serve
real TCP connections on loopback (accept, Gunicorn's parser, the WSGI app,
the response, close), one as Gunicorn alone and one with the exporter's
hooks and app wrapper installed as ``gunicorn_config`` installs them
(post_fork, post_worker_init, pre_request, post_request; files mode, the
request recorded natively). Blocks of requests alternate between the two;
each block pair gives a ratio, and the median of those ratios is the
figure, with a 95% confidence interval (order statistics of the median).
A control row runs the same comparison between two workers of Gunicorn
alone: it reads 100% within its interval when the method is fair.

The client side (connect, send, read the answer) is outside the timing, and
with it the kernel's share of each connection that the client's connect()
pays on loopback: the ratio here is to less than a served request costs a
server (bench_gunicorn.py's CPU per request), so it overstates our share.
The app is the hello world of the end-to-end benchmark (demo/app.py), whose
row the 3% target judges, and, to show the other paths, the same body as a
generator and (with OpenTelemetry's SDK) the hello world in a span, whose
trace becomes the exemplar of the request's duration.

With FastAPI installed, a last row does the same for uvicorn's workers: the
FastAPI hello world of bench_gunicorn.py, alone and wrapped as
post_worker_init wraps a uvicorn worker's app, called in one event loop as
uvicorn calls an ASGI app (no server around it: its share, larger than the
app's here, is not in the denominator).

    python bench/bench_request_path.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))
sys.path.insert(0, str(ROOT / "bench"))

from timing import median_interval, print_targets  # noqa: E402

TARGET = 1.03  # ours at most 3% more time a request than Gunicorn alone
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def streamed_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    yield body


def make_worker(listener: socket.socket, ours: bool) -> Any:
    """A SyncWorker of Gunicorn as a worker process has it after its start;
    with ours, after our post_fork ran (once a process, as in a worker)."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from gunicorn.workers.sync import SyncWorker

    cfg = Config()
    if ours:
        from gunicorn_prometheus_exporter import gunicorn_config

        for hook in ("post_fork", "post_worker_init", "pre_request", "post_request"):
            cfg.set(hook, getattr(gunicorn_config, hook))
    worker = SyncWorker(1, os.getpid(), [listener], None, 30, cfg, Logger(cfg))
    if ours:
        cfg.post_fork(None, worker)
    return worker


def load(worker: Any, app: Any) -> None:
    """The worker's app is ``app``: what Gunicorn and post_worker_init do."""
    worker.wsgi = app
    worker.cfg.post_worker_init(worker)


def serve(worker: Any, listener: socket.socket, requests: int) -> float:
    """Seconds the worker spent on ``requests`` connections (accept to close)."""
    address = listener.getsockname()
    spent = 0.0
    for _ in range(requests):
        client = socket.create_connection(address)
        client.sendall(REQUEST)
        # The client's FIN is there already: Gunicorn's graceful close after
        # the answer (it drains until the peer closes) does not wait for us.
        client.shutdown(socket.SHUT_WR)
        start = time.perf_counter()
        connection, peer = listener.accept()
        worker.handle(listener, connection, peer)
        spent += time.perf_counter() - start
        answer = client.recv(4096)
        client.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {answer[:80]!r}")
    return spent


# us a request alone, us with ours, and the median ratio with its 95% interval
Measured = tuple[float, float, tuple[float, float, float]]


def alternate(
    bare: Callable[[], float], ours: Callable[[], float], blocks: int, block: int
) -> Measured:
    """Blocks of ``block`` requests, alone and with ours in turn (each call
    serves one block and returns its seconds): us a request of each and the
    median ratio with its interval."""
    bare()  # warm up both
    ours()
    ratios, bare_times, our_times = [], [], []
    for i in range(blocks):
        # Alternate which goes first, so that neither always follows the other.
        if i % 2 == 0:
            bare_time, our_time = bare(), ours()
        else:
            our_time, bare_time = ours(), bare()
        bare_times.append(bare_time / block)
        our_times.append(our_time / block)
        ratios.append(our_time / bare_time)
    return (
        statistics.median(bare_times) * 1e6,
        statistics.median(our_times) * 1e6,
        median_interval(ratios),
    )


def measure(
    workers: tuple[Any, Any], listener: socket.socket, app: Any, blocks: int, block: int
) -> Measured:
    """Two SyncWorkers serving ``app``, alone and with ours."""
    bare, ours = workers
    load(bare, app)
    load(ours, app)
    return alternate(
        lambda: serve(bare, listener, block), lambda: serve(ours, listener, block), blocks, block
    )


# An HTTP request's scope as uvicorn hands it to an ASGI app.
ASGI_SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
}


async def asgi_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def asgi_send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"unexpected answer: {message}")


async def serve_asgi(app: Any, requests: int) -> float:
    """Seconds ``app`` took for ``requests`` requests, called as uvicorn calls it."""
    start = time.perf_counter()
    for _ in range(requests):
        await app({**ASGI_SCOPE, "state": {}}, asgi_receive, asgi_send)
    return time.perf_counter() - start


def measure_asgi(apps: tuple[Any, Any], blocks: int, block: int) -> Measured:
    """An ASGI app alone and wrapped, in one event loop."""
    bare, ours = apps
    loop = asyncio.new_event_loop()
    try:
        return alternate(
            lambda: loop.run_until_complete(serve_asgi(bare, block)),
            lambda: loop.run_until_complete(serve_asgi(ours, block)),
            blocks,
            block,
        )
    finally:
        loop.close()


def asgi_apps(recorded: Any) -> tuple[Any, Any]:
    """bench_gunicorn.py's FastAPI hello world alone, and wrapped as
    post_worker_init wraps a uvicorn worker's app (after our post_fork)."""
    from fastapi_app import app
    from gunicorn_prometheus_exporter import worker_hooks
    from gunicorn_prometheus_exporter.middleware import ASGIRecorder

    errors = recorded.worker_error_handling.labels("500").inc
    return app, ASGIRecorder(app, worker_hooks._worker.recorder, errors)


def traced_app() -> Any:
    """The hello world with each request in a span (OpenTelemetry's SDK)."""
    from traced_app import app

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    blocks, block = (40, 100) if args.quick else (200, 100)
    size = (blocks, block)

    directory = tempfile.mkdtemp(prefix="gpe-bench-request-path-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    import gunicorn

    import gunicorn_prometheus_exporter as exporter
    from gunicorn_prometheus_exporter import metrics, worker_hooks

    exporter.enable_native_values(directory)
    recorded = metrics.create()
    worker_hooks.inherit(recorded, directory)  # what the master hands its workers
    from app import app as hello_app

    print("# Request path benchmark: Gunicorn's sync worker, request by request\n")
    print(
        f"- python {sys.version.split()[0]}, Gunicorn {gunicorn.__version__}; {blocks} block "
        f"pairs of {block} requests, alternating; OpenTelemetry's API installed (the "
        f"exemplar is looked up): {importlib.util.find_spec('opentelemetry') is not None}\n"
    )
    print("| app | alone, us/request | with ours, us/request | ours / alone (95% CI) |")
    print("|---|---|---|---|")
    misses = []
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    bare = make_worker(listener, ours=False)
    ours_worker = make_worker(listener, ours=True)  # post_fork once, as in a worker process
    rows: list[tuple[str, Callable[[], Measured]]] = [
        # Gunicorn alone against itself: what the method reads when nothing differs.
        (
            "control: Gunicorn alone, twice",
            lambda: measure((bare, make_worker(listener, ours=False)), listener, hello_app, *size),
        ),
        (
            "hello world, list body",
            lambda: measure((bare, ours_worker), listener, hello_app, *size),
        ),
        ("the same, streamed", lambda: measure((bare, ours_worker), listener, streamed_app, *size)),
    ]
    if importlib.util.find_spec("fastapi") is not None:
        rows.append(
            (
                "FastAPI hello world, called as uvicorn calls an ASGI app",
                lambda: measure_asgi(asgi_apps(recorded), *size),
            )
        )
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        # Last: importing the traced app makes OpenTelemetry's SDK the tracer
        # provider, after which FastAPI's hello world took 4x as long here.
        rows.append(
            (
                "the hello world in a span, exemplars",
                lambda: measure((bare, ours_worker), listener, traced_app(), *size),
            )
        )
    for name, run in rows:
        alone, ours, (ratio, low, high) = run()
        print(
            f"| {name} | {alone:.1f} | {ours:.1f} ({ours - alone:+.1f}) | "
            f"{ratio:.1%} ({low:.1%} - {high:.1%}) |"
        )
        if name.startswith("hello world") and ratio > TARGET:
            misses.append(f"{name}: {ratio:.1%} of Gunicorn's time alone > {TARGET:.0%}")
    listener.close()
    served = (len(rows) - 1) * (blocks + 1) * block  # each run of ours: warm-up and measured
    counted = recorded.worker_requests.labels("GET", "2xx")._value.get()
    print(f"\nrequests served with ours: {served:,}, recorded: {counted:,.0f}")
    if counted != served:
        misses.append("ours did not record every request it served")
    print_targets(misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
