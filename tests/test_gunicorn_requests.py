"""End to end: real Gunicorn (every worker class), real HTTP, /metrics from
the agent. Exact request counts by method and status class, failures, errors
Gunicorn answered itself, histograms; malformed requests; the per-worker
gauges; the exposition formats."""

from __future__ import annotations

import gzip
import importlib.util
import time
import urllib.request
from pathlib import Path

import pytest

from gunicorn_runner import (
    LIVEALL,
    Agent,
    Gunicorn,
    labelled,
    parse,
    pids_of,
    raw_request,
    value,
)

ASGI_APP = '''
import asyncio


async def app(scope, receive, send):
    """The demo app's routes, in ASGI."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if path == "/boom":
        raise RuntimeError("the test app fails on purpose")
    if path == "/slow":
        await asyncio.sleep(float(scope.get("query_string", b"").decode() or 0.2))
    status, body = {"/missing": (404, b"not here\\n"), "/fail": (503, b"try later\\n")}.get(
        path, (200, b"Hello, world!\\n"))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''

HAS_GEVENT = importlib.util.find_spec("gevent") is not None
HAS_TORNADO = importlib.util.find_spec("tornado") is not None

WORKER_KINDS = [
    pytest.param("sync", id="sync"),
    pytest.param("gthread", id="gthread"),
    pytest.param(
        "gevent",
        id="gevent",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
    # gevent_pywsgi and tornado serve requests with their own servers, which call no
    # pre_request/post_request hook: the exporter wraps the app there instead.
    pytest.param(
        "gevent_pywsgi",
        id="gevent_pywsgi",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
    pytest.param(
        "tornado",
        id="tornado",
        marks=pytest.mark.skipif(not HAS_TORNADO, reason="tornado not installed"),
    ),
    pytest.param("asgi", id="asgi"),
    # the worker classes of gunicorn-prometheus-exporter 0.2.x, with our config
    pytest.param("gunicorn_prometheus_exporter.PrometheusWorker", id="0.2.x-PrometheusWorker"),
    pytest.param(
        "gunicorn_prometheus_exporter.PrometheusThreadWorker", id="0.2.x-PrometheusThreadWorker"
    ),
    pytest.param(
        "gunicorn_prometheus_exporter.PrometheusGeventWorker",
        id="0.2.x-PrometheusGeventWorker",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
]

# What each worker gets: (method, path, body, expected status)
PLAN = (
    [("GET", "/", None, 200)] * 5
    + [("GET", "/slow?0.1", None, 200)]
    + [("GET", "/missing", None, 404)] * 3
    + [("GET", "/fail", None, 503)] * 2
    + [("GET", "/boom", None, 500)] * 2
    + [("POST", "/", b"0123456789", 200)]
)

EXPECTED_REQUESTS = {("GET", "2xx"): 6, ("GET", "4xx"): 3, ("GET", "5xx"): 4, ("POST", "2xx"): 1}
EXPECTED_FAILED = {"GET": 4}
EXPECTED_ERRORS = {"500": 2}  # the two raised requests, answered 500 by Gunicorn
# bodies of the answers the app made: 6 x "Hello, world!\n", 3 x "not here\n", 2 x "try later\n", 1 x hello
MIN_RESPONSE_BYTES = 7 * 14 + 3 * 9 + 2 * 10


def start(tmp_path: Path, kind: str, **kw: object) -> Gunicorn:
    extra: list[str] = []
    app, chdir = "app:app", None
    if kind == "gthread":
        extra += ["--threads", "4"]
    if kind == "asgi":
        (tmp_path / "asgi_app.py").write_text(ASGI_APP)
        app, chdir = "asgi_app:app", tmp_path
    kwargs: dict = {"worker_class": kind, "app": app, "extra_args": extra, **kw}
    if chdir is not None:
        kwargs["chdir"] = chdir
    return Gunicorn(tmp_path, **kwargs)


def nonzero(samples, name: str, *labels: str) -> dict:
    out = {}
    for key, v in labelled(samples, name).items():
        if v:
            d = dict(key)
            out[tuple(d[name] for name in labels) if len(labels) != 1 else d[labels[0]]] = v
    return out


def send(g: Gunicorn, plan, timeout: float = 10.0) -> list[int]:
    statuses = []
    for method, path, body, _ in plan:
        try:
            statuses.append(g.status(path, method=method, body=body, timeout=timeout))
        except OSError:  # e.g. tornado never answers a raising WSGI app
            statuses.append(-1)
    return statuses


@pytest.mark.parametrize("kind", WORKER_KINDS)
def test_requests_are_counted_exactly(tmp_path: Path, kind: str) -> None:
    no_hooks = kind in ("tornado", "gevent_pywsgi")  # fail fast there
    with start(tmp_path, kind) as g:
        statuses = send(g, PLAN, timeout=1.0 if no_hooks else 10.0)
        expected_statuses = [s for *_, s in PLAN]
        if kind == "tornado":  # tornado's WSGIContainer leaves a raising app's request unanswered
            expected_statuses = [-1 if s == 500 else s for s in expected_statuses]
        assert statuses == expected_statuses

        total = len(PLAN)
        samples = g.wait_metrics(
            lambda s: (
                value(s, "gunicorn_worker_requests_total") >= total
                and value(s, "gunicorn_worker_request_duration_seconds_count") >= total
            ),
            timeout=2.0 if no_hooks else 5.0,
            what=f"{total} requests counted",
        )

        # every mismatch at once (one worker class can break several)
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
            "duration +Inf bucket by method": {
                m: value(
                    samples, "gunicorn_worker_request_duration_seconds_bucket", method=m, le="+Inf"
                )
                for m in ("GET", "POST")
            },
            "duration _sum GET >= 0.1 (/slow?0.1)": value(
                samples, "gunicorn_worker_request_duration_seconds_sum", method="GET"
            )
            >= 0.1,
            "request size _count, +Inf, _sum": (
                value(samples, "gunicorn_worker_request_size_bytes_count"),
                value(samples, "gunicorn_worker_request_size_bytes_bucket", le="+Inf"),
                value(samples, "gunicorn_worker_request_size_bytes_sum"),
            ),
            "response size _count, +Inf": (
                value(samples, "gunicorn_worker_response_size_bytes_count"),
                value(samples, "gunicorn_worker_response_size_bytes_bucket", le="+Inf"),
            ),
            f"response size _sum >= {MIN_RESPONSE_BYTES}": value(
                samples, "gunicorn_worker_response_size_bytes_sum"
            )
            >= MIN_RESPONSE_BYTES,
        }
        expected = {
            "requests by (method, status)": EXPECTED_REQUESTS,
            "failed by method": EXPECTED_FAILED,
            "error_handling by status": EXPECTED_ERRORS,
            "duration _count by method": {"GET": 13, "POST": 1},
            "duration +Inf bucket by method": {"GET": 13, "POST": 1},
            "duration _sum GET >= 0.1 (/slow?0.1)": True,
            "request size _count, +Inf, _sum": (total, total, 10),  # 10: the POST body
            "response size _count, +Inf": (total, total),
            f"response size _sum >= {MIN_RESPONSE_BYTES}": True,
        }
        wrong = {
            k: f"got {got[k]!r}, expected {expected[k]!r}"
            for k in expected
            if got[k] != expected[k]
        }
        assert wrong == {}

        # nothing is counted late or twice
        time.sleep(0.5)
        assert value(g.samples(), "gunicorn_worker_requests_total") == total


MALFORMED_KINDS = [
    pytest.param("sync", id="sync"),
    pytest.param("gthread", id="gthread"),
    pytest.param(
        "gevent",
        id="gevent",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
    pytest.param(
        "asgi",
        id="asgi",
        marks=pytest.mark.xfail(
            reason="Gunicorn's ASGI protocol answers malformed requests itself, through no hook and no "
            "handle_error: nothing of ours sees them",
            strict=True,
        ),
    ),
]


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_request_is_counted_as_400(tmp_path: Path, kind: str) -> None:
    with start(tmp_path, kind) as g:
        answer = raw_request(g.port, b"GARBAGE\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
        assert g.status("/") == 200  # and the worker still serves
        samples = g.wait_metrics(
            # the 400 is counted before Gunicorn answers it; the GET after its answer
            lambda s: value(s, "gunicorn_worker_requests_total", method="GET") >= 1,
            what="the GET counted",
        )
        assert nonzero(samples, "gunicorn_worker_error_handling_total", "status") == {"400": 1}
        assert nonzero(samples, "gunicorn_worker_requests_total", "method", "status") == {
            ("other", "4xx"): 1,
            ("GET", "2xx"): 1,
        }
        assert nonzero(samples, "gunicorn_worker_failed_requests_total", "method") == {}


def test_worker_gauges_have_one_series_per_worker(tmp_path: Path) -> None:
    """The liveall gauges carry exactly the workers' pids (not the master's,
    not the agent's), with real values, and every worker is 'running'."""
    with start(tmp_path, "sync") as g:
        workers = set(g.worker_pids())
        assert len(workers) == 2
        samples = g.wait_metrics(
            lambda s: all(
                value(s, "gunicorn_worker_uptime_seconds", pid=str(p)) > 0 for p in workers
            ),
            what="uptime sampled",
        )
        for name in (
            "gunicorn_worker_memory_bytes",
            "gunicorn_worker_uptime_seconds",
            "gunicorn_worker_open_fds",
            "gunicorn_worker_threads",
            "gunicorn_worker_cpu_percent",
        ):
            assert pids_of(samples, name) == workers, (name, g.pid, labelled(samples, name))
        for pid in workers:
            p = str(pid)
            assert value(samples, "gunicorn_worker_memory_bytes", pid=p) > 1_000_000
            assert value(samples, "gunicorn_worker_open_fds", pid=p) >= 3
            assert value(samples, "gunicorn_worker_threads", pid=p) >= 1
            assert value(samples, "gunicorn_worker_state", pid=p, state="running") == 1
            assert value(samples, "gunicorn_worker_state", pid=p, state="booting") == 0
            assert value(samples, "gunicorn_worker_state", pid=p, state="stopping") == 0
        assert pids_of(samples, "gunicorn_worker_state") == workers


def test_master_workers_gauge_counts_the_workers(tmp_path: Path) -> None:
    with start(tmp_path, "sync", workers=3) as g:
        g.wait_metrics(
            lambda s: value(s, "gunicorn_master_workers") == 3,
            timeout=5,
            what="gunicorn_master_workers == 3 (the -w 3 workers are running)",
        )


def test_health_and_exposition_formats(tmp_path: Path) -> None:
    with start(tmp_path, "sync") as g:
        assert g.status("/") == 200
        g.wait_metrics(lambda s: value(s, "gunicorn_worker_requests_total") == 1)
        base = f"http://127.0.0.1:{g.metrics_port}"

        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            assert r.status == 200
            assert r.read().strip() == b"ok"

        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "version=0.0.4" in r.headers["Content-Type"]
            text = r.read().decode()
        assert value(parse(text), "gunicorn_worker_requests_total", method="GET", status="2xx") == 1

        req = urllib.request.Request(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om = r.read().decode()
        assert om.rstrip().endswith("# EOF")
        from prometheus_client.openmetrics.parser import (
            text_string_to_metric_families as om_parse,
        )

        families = {f.name: f for f in om_parse(om)}
        requests = families["gunicorn_worker_requests"]
        assert requests.type == "counter"
        assert (
            sum(
                s.value
                for s in requests.samples
                if s.name == "gunicorn_worker_requests_total" and s.labels.get("status") == "2xx"
            )
            == 1
        )

        req = urllib.request.Request(f"{base}/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            unzipped = gzip.decompress(r.read()).decode()
        assert (
            value(parse(unzipped), "gunicorn_worker_requests_total", method="GET", status="2xx")
            == 1
        )

        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/nothing-here", timeout=5)
        assert e.value.code == 404


def test_every_liveall_gauge_is_exported(tmp_path: Path) -> None:
    with start(tmp_path, "gthread") as g:
        workers = set(g.worker_pids())
        samples = g.wait_metrics(
            lambda s: all(workers <= pids_of(s, n) for n in LIVEALL), what="gauges"
        )
        # gthread with --threads 4: the worker runs a thread pool
        assert all(value(samples, "gunicorn_worker_threads", pid=str(p)) >= 1 for p in workers)


STATUS_APP = '''
def app(environ, start_response):
    """/status/NNN answers NNN; /stream sends 3 chunks of 1000 bytes without Content-Length;
    a body is read whole."""
    path = environ.get("PATH_INFO", "/")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response(f"{code} Whatever", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"x" * 1000 for _ in range(3))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
'''


def test_methods_status_classes_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "status_app.py").write_text(STATUS_APP)
    with Gunicorn(tmp_path, app="status_app:app", chdir=tmp_path) as g:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"):
            assert g.status("/", method=method) == 200, method
        assert g.status("/status/302") == 302
        assert g.status("/status/304") == 304
        assert g.status("/status/418") == 418
        assert g.status("/status/500") == 500
        assert g.status("/status/599") == 599
        assert g.status("/", method="POST", body=b"a" * 2500) == 200
        status, _, body = g.get("/stream")
        assert (status, len(body)) == (200, 3000)
        total = 8 + 5 + 2
        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_worker_requests_total") >= total, what=f"{total} requests"
        )
        assert nonzero(samples, "gunicorn_worker_requests_total", "method", "status") == {
            ("GET", "2xx"): 2,
            ("GET", "3xx"): 2,
            ("GET", "4xx"): 1,
            ("GET", "5xx"): 2,
            ("POST", "2xx"): 2,
            ("PUT", "2xx"): 1,
            ("DELETE", "2xx"): 1,
            ("PATCH", "2xx"): 1,
            ("OPTIONS", "2xx"): 1,
            ("HEAD", "2xx"): 1,
            ("other", "2xx"): 1,
        }
        # 5xx answered by the app count as failed; nothing was raised, Gunicorn answered no error itself
        assert nonzero(samples, "gunicorn_worker_failed_requests_total", "method") == {"GET": 2}
        assert nonzero(samples, "gunicorn_worker_error_handling_total", "status") == {}
        # request sizes: one body of 2500 bytes
        assert value(samples, "gunicorn_worker_request_size_bytes_sum") == 2500
        assert value(samples, "gunicorn_worker_request_size_bytes_bucket", le="1000.0") == total - 1
        assert value(samples, "gunicorn_worker_request_size_bytes_bucket", le="10000.0") == total
        # response sizes: the streamed 3000 bytes are counted
        assert value(samples, "gunicorn_worker_response_size_bytes_bucket", le="10000.0") == total
        assert (
            value(samples, "gunicorn_worker_response_size_bytes_bucket", le="1000.0") == total - 1
        )
        # every body as the app gave it: 9 x "hello", 5 x "ok" (lists), the 3000 streamed
        assert value(samples, "gunicorn_worker_response_size_bytes_sum") == 9 * 5 + 5 * 2 + 3000


CONCURRENT_KINDS = [
    pytest.param("gthread", id="gthread"),
    pytest.param(
        "gevent",
        id="gevent",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
    pytest.param("sync", id="sync"),
]


@pytest.mark.parametrize("kind", CONCURRENT_KINDS)
def test_concurrent_requests_counted_exactly(tmp_path: Path, kind: str) -> None:
    """8 clients, 25 requests each, keep-alive where the worker allows it:
    exactly 200 requests, none lost or doubled by threads or greenlets."""
    import http.client
    import threading

    clients, each = 8, 25
    with start(tmp_path, kind) as g:
        errors: list[BaseException] = []

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
            try:
                for j in range(each):
                    path = "/missing" if j % 5 == 0 else "/"
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                    except (http.client.HTTPException, OSError):
                        # the server closed a kept-alive connection: once more on a new one
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                    assert resp.status == (404 if j % 5 == 0 else 200)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        total = clients * each
        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_worker_requests_total") >= total, what=f"{total} requests"
        )
        assert nonzero(samples, "gunicorn_worker_requests_total", "method", "status") == {
            ("GET", "2xx"): total * 4 // 5,
            ("GET", "4xx"): total // 5,
        }
        assert value(samples, "gunicorn_worker_request_duration_seconds_count") == total
        assert value(samples, "gunicorn_worker_response_size_bytes_count") == total


OLD_CLASSES = [
    pytest.param("PrometheusWorker", id="PrometheusWorker"),
    pytest.param("PrometheusThreadWorker", id="PrometheusThreadWorker"),
    pytest.param(
        "PrometheusGeventWorker",
        id="PrometheusGeventWorker",
        marks=pytest.mark.skipif(not HAS_GEVENT, reason="gevent not installed"),
    ),
]


@pytest.mark.parametrize("name", OLD_CLASSES)
def test_old_worker_class_without_our_config(tmp_path: Path, name: str) -> None:
    """A 0.2.x configuration: only the worker class names us, no hooks, a
    PROMETHEUS_MULTIPROC_DIR of the user's, the agent run by hand on it."""
    directory = tmp_path / "mp"
    directory.mkdir()
    g = Gunicorn(
        tmp_path,
        config=None,
        worker_class=f"gunicorn_prometheus_exporter.{name}",
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        wait_ready=False,
    )
    agent = None
    try:
        g.wait_serving()
        agent = Agent(tmp_path, ["--directory", str(directory), "--source", "files"])
        statuses = send(g, PLAN)
        assert statuses == [s for *_, s in PLAN]
        total = len(PLAN)
        samples = agent.wait_metrics(
            lambda s: value(s, "gunicorn_worker_requests_total") >= total, what=f"{total} requests"
        )
        assert (
            nonzero(samples, "gunicorn_worker_requests_total", "method", "status")
            == EXPECTED_REQUESTS
        )
        assert (
            nonzero(samples, "gunicorn_worker_failed_requests_total", "method") == EXPECTED_FAILED
        )
        assert nonzero(samples, "gunicorn_worker_error_handling_total", "status") == EXPECTED_ERRORS
        assert value(samples, "gunicorn_worker_request_duration_seconds_count") == total
        assert value(samples, "gunicorn_worker_request_duration_seconds_sum") >= 0.1
        workers = set(g.worker_pids())
        agent.wait_metrics(
            lambda s: workers <= pids_of(s, "gunicorn_worker_memory_bytes"), what="worker gauges"
        )
        assert "worker metrics off" not in g.log()
    finally:
        g.stop()
        if agent is not None:
            agent.stop()
