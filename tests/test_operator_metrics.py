"""The saturation and identity metrics operators need (issue 11, item 1),
with real Gunicorn and real HTTP: requests in flight and busy workers while
slow requests are held open (sync, gthread, uvicorn), configured workers
following TTIN/TTOU, the listen backlog when the accept queue fills, worker
CPU as a counter that survives a killed worker, start times, build info,
labelled counters at 0 before any event (and totals exactly as
prometheus_client's own collector reads the same directory), and the exact
status code label."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import gunicorn
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from gunicorn_prometheus_exporter.metrics import (
    ERROR_STATUSES,
    MASTER_RESTART_REASONS,
    MASTER_SIGNALS,
    METHODS,
    STATUS_CLASSES,
    WORKER_EXIT_REASONS,
)
from gunicorn_runner import Gunicorn, http_get, labelled, value, wait_for

# /hold?NAME: says it started (file NAME.started), then waits for NAME.release.
# /burn?SECONDS: burns CPU. /code?N: answers status N.
WSGI_APP = """
import os, time

GATE = os.environ["TEST_GATE"]


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    status = "200 OK"
    if path == "/hold":
        open(os.path.join(GATE, query + ".started"), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(GATE, query + ".release")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    elif path == "/burn":
        end = time.process_time() + float(query)
        while time.process_time() < end:
            pass
    elif path == "/code":
        status = query + " Test"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""

ASGI_APP = """
import asyncio, os, time

GATE = os.environ["TEST_GATE"]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    open(os.path.join(GATE, query + ".started"), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(GATE, query + ".release")):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""


def start(tmp_path: Path, source: str = WSGI_APP, **kw: object) -> Gunicorn:
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    (tmp_path / "ops_app.py").write_text(source)
    env = {"TEST_GATE": str(gate), **kw.pop("env", {})}  # type: ignore[dict-item]
    return Gunicorn(tmp_path, app="ops_app:app", chdir=tmp_path, env=env, **kw)  # type: ignore[arg-type]


def _status(g: Gunicorn, name: str) -> int:
    return http_get(g.port, f"/hold?{name}", timeout=30.0)[0]


@contextmanager
def holding(g: Gunicorn, names: list[str]) -> Iterator[None]:
    """Requests /hold?NAME held open (each one started before the next is
    sent) until the block ends; then released, and answered 200."""
    gate = g.tmp / "gate"
    threads: list[threading.Thread] = []
    statuses: list[int] = []
    try:
        for name in names:
            t = threading.Thread(target=lambda n=name: statuses.append(_status(g, n)), daemon=True)
            t.start()
            threads.append(t)
            wait_for(lambda n=name: (gate / f"{n}.started").exists(), 10, message=f"{name} held")
        yield
    finally:
        for name in names:
            (gate / f"{name}.release").touch()
        for t in threads:
            t.join(15)
    assert statuses == [200] * len(names)


def saturation(samples: list) -> tuple[float, float]:
    return (
        value(samples, "gunicorn_worker_requests_in_flight"),
        value(samples, "gunicorn_workers_busy"),
    )


@pytest.mark.parametrize(
    ("worker_class", "workers", "extra", "held_requests", "busy"),
    [
        pytest.param("sync", 3, [], 2, 2, id="sync"),  # a held sync worker accepts nothing more
        pytest.param("gthread", 1, ["--threads", "4"], 3, 1, id="gthread"),
    ],
)
def test_in_flight_and_busy_while_requests_are_held(
    tmp_path: Path, worker_class: str, workers: int, extra: list[str], held_requests: int, busy: int
) -> None:
    with start(tmp_path, workers=workers, worker_class=worker_class, extra_args=extra) as g:
        assert saturation(g.samples()) == (0, 0)
        with holding(g, [f"r{i}" for i in range(held_requests)]):
            g.wait_metrics(
                lambda s: saturation(s) == (held_requests, busy),
                what=f"{held_requests} in flight on {busy} busy workers",
            )
        samples = g.wait_metrics(lambda s: saturation(s) == (0, 0), what="nothing in flight")
        assert value(samples, "gunicorn_worker_requests_total", method="GET", status="2xx") == (
            held_requests
        )


@pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None, reason="uvicorn not installed")
def test_in_flight_with_the_uvicorn_worker(tmp_path: Path) -> None:
    with start(tmp_path, ASGI_APP, workers=1, worker_class="uvicorn.workers.UvicornWorker") as g:
        with holding(g, ["a", "b", "c"]):
            g.wait_metrics(lambda s: saturation(s) == (3, 1), what="3 in flight on 1 busy worker")
        g.wait_metrics(lambda s: saturation(s) == (0, 0), what="nothing in flight")


def test_configured_workers_follow_ttin_and_ttou(tmp_path: Path) -> None:
    with start(tmp_path, workers=2) as g:
        configured = "gunicorn_master_workers_configured"
        assert value(g.samples(), configured) == 2
        g.signal(signal.SIGTTIN)
        g.wait_metrics(lambda s: value(s, configured) == 3, what="3 configured after TTIN")
        for left in (2, 1):  # one at a time: the kernel merges a signal still pending
            g.signal(signal.SIGTTOU)
            g.wait_metrics(lambda s, n=left: value(s, configured) == n, what=f"{left} configured")


def test_listen_backlog_counts_connections_not_accepted(tmp_path: Path) -> None:
    queued = 5
    backlog = "gunicorn_master_listen_backlog"
    with start(tmp_path, workers=1) as g:
        with holding(g, ["stuck"]), ExitStack() as stack:
            # The master samples the backlog at intervals: its last sample may
            # be from before the worker accepted the stuck request.
            g.wait_metrics(lambda s: value(s, backlog) == 0, what="the stuck request accepted")
            for _ in range(queued):  # the one sync worker is stuck: nobody accepts these
                stack.enter_context(socket.create_connection(("127.0.0.1", g.port), timeout=5))
            g.wait_metrics(lambda s: value(s, backlog) == queued, what=f"a backlog of {queued}")
        # released and closed: the worker accepts them, the queue drains
        g.wait_metrics(lambda s: value(s, backlog) == 0, what="an empty accept queue")


def test_cpu_seconds_grow_and_never_go_back_when_a_worker_is_killed(tmp_path: Path) -> None:
    name = "gunicorn_worker_cpu_seconds_total"
    with start(tmp_path, workers=2) as g:
        before = value(g.samples(), name)
        assert http_get(g.port, "/burn?0.6")[0] == 200
        samples = g.wait_metrics(lambda s: value(s, name) >= before + 0.5, what="0.6 s of CPU")
        burnt = value(samples, name)
        seen = [burnt]
        victim = g.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # across the kill, the archive and the new worker
            seen.append(value(g.samples(), name))
            time.sleep(0.05)
        g.wait_metrics(lambda s: victim not in g.worker_pids() and len(g.worker_pids()) == 2)
        seen.append(value(g.samples(), name))
        assert seen == sorted(seen), f"{name} went backwards: {seen}"


def test_start_time_of_each_worker(tmp_path: Path) -> None:
    with start(tmp_path, workers=2) as g:
        samples = g.samples()
        started = {
            int(ls["pid"]): v for n, ls, v in samples if n == "gunicorn_worker_start_time_seconds"
        }
        assert set(started) == set(g.worker_pids())
        for pid, when in started.items():
            # /proc/PID/stat's start time: the master started the test's Gunicorn moments ago
            assert time.time() - 60 < when <= time.time() + 1, (pid, when)
            assert abs(when - os.stat(f"/proc/{pid}").st_mtime) < 60


def test_build_info(tmp_path: Path) -> None:
    with start(tmp_path, workers=2) as g:
        info = labelled(g.samples(), "gunicorn_exporter_build_info")
        assert info == {
            (
                ("gunicorn_version", gunicorn.__version__),
                ("python_version", platform.python_version()),
                ("version", importlib.metadata.version("gunicorn-prometheus-exporter")),
            ): 1.0
        }


def test_deprecated_names_say_what_replaces_them(tmp_path: Path) -> None:
    with start(tmp_path, workers=1) as g:
        text = g.scrape()
        assert (
            "# HELP gunicorn_worker_cpu_percent Deprecated: use gunicorn_worker_cpu_seconds_total"
            in text
        )
        assert (
            "# HELP gunicorn_worker_uptime_seconds Deprecated: use gunicorn_worker_start_time_seconds"
            in text
        )


def _label_values(samples: list, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for key, v in labelled(samples, name).items()}


def test_labelled_counters_are_zero_before_any_event(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    with start(tmp_path, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as g:
        samples = g.samples()
        requests = labelled(samples, "gunicorn_worker_requests_total")
        assert {(dict(k)["method"], dict(k)["status"]) for k in requests} == {
            (m, s) for m in METHODS for s in STATUS_CLASSES
        }
        assert set(requests.values()) == {0.0}
        for name, label, known in (
            ("gunicorn_worker_failed_requests_total", "method", METHODS),
            ("gunicorn_worker_restart_total", "reason", WORKER_EXIT_REASONS),
            ("gunicorn_master_worker_restart_total", "reason", MASTER_RESTART_REASONS),
            ("gunicorn_worker_error_handling_total", "status", ERROR_STATUSES),
        ):
            assert _label_values(samples, name, label) == dict.fromkeys(known, 0.0), name
        assert set(_label_values(samples, "gunicorn_master_signals_total", "signal")) == set(
            MASTER_SIGNALS
        )
        for _ in range(3):
            assert g.status("/") == 200
        assert g.status("/code?404") == 404
        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_worker_requests_total") == 4, what="4 requests"
        )
        # prometheus_client's own collector reads the same directory to the same totals
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        theirs = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if s.name.endswith("_total") and s.name.startswith("gunicorn_worker_requests")
        }
        ours = {
            (n, tuple(sorted(ls.items()))): v
            for n, ls, v in samples
            if n.endswith("_total") and n.startswith("gunicorn_worker_requests")
        }
        assert ours == theirs
        assert ours[("gunicorn_worker_requests_total", (("method", "GET"), ("status", "2xx")))] == 3


def test_exact_status_code_label(tmp_path: Path) -> None:
    env = {"GUNICORN_PROMETHEUS_STATUS_LABEL": "code"}
    with start(tmp_path, workers=2, env=env) as g:
        assert labelled(g.samples(), "gunicorn_worker_requests_total") == {}  # made at first use
        sent = {"200": 2, "404": 1, "418": 3, "299": 1}
        for code, times in sent.items():
            for _ in range(times):
                assert http_get(g.port, f"/code?{code}")[0] == int(code)
        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_worker_requests_total") == sum(sent.values()),
            what="every request",
        )
        by_code = {
            dict(k)["status"]: v
            for k, v in labelled(samples, "gunicorn_worker_requests_total").items()
        }
        assert by_code == {code: float(n) for code, n in sent.items()}


def test_invalid_status_label_stops_gunicorn_naming_it(tmp_path: Path) -> None:
    g = start(
        tmp_path, workers=1, env={"GUNICORN_PROMETHEUS_STATUS_LABEL": "exact"}, wait_ready=False
    )
    try:
        g.proc.wait(30)
        assert g.proc.returncode != 0
        assert "GUNICORN_PROMETHEUS_STATUS_LABEL" in g.log()
    finally:
        g.stop()
