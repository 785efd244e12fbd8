"""``--preload``: the app is imported in the master before any hook runs. Its
module-level metrics (every type and gauge mode, labelled or not) are stored
natively and appear exactly, whether or not PROMETHEUS_MULTIPROC_DIR is set,
and what the master set before fork counts once, as prometheus_client's
multiprocess mode defines it (the master's values stay in the master's
files; each worker starts from zero in its own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import Gauge

from gunicorn_runner import Gunicorn, labelled, value

# prometheus_client's own list (the oracle), in a fixed order.
MODES = tuple(sorted(Gauge._MULTIPROC_MODES))

PRELOADED_APP = f"""
import os

from prometheus_client import Counter, Gauge, Histogram, Summary

MODES = {MODES!r}
# created and set at import, in the master (--preload)
preloaded = Counter("app_preloaded", "set at import")
preloaded.inc(5)
kinds = Counter("app_events", "labelled", ["kind"])
kinds.labels("import").inc(2)
latency = Histogram("app_latency_seconds", "observed at import and per request", buckets=(0.1, 1.0))
latency.observe(0.5)
payload = Summary("app_payload_bytes", "observed at import and per request")
payload.observe(7)
gauges = {{mode: Gauge(f"app_gauge_{{mode}}", "set at import", multiprocess_mode=mode) for mode in MODES}}
for gauge in gauges.values():
    gauge.set(10)
labelled_gauge = Gauge("app_labelled_gauge", "labelled, set at import", ["shard"], multiprocess_mode="sum")
labelled_gauge.labels("a").set(3)
MASTER = os.getpid()


def app(environ, start_response):
    preloaded.inc()
    kinds.labels("request").inc()
    latency.observe(0.05)
    payload.observe(1)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

REQUESTS = 12
WORKERS = 2


@pytest.mark.parametrize(
    "with_directory", [False, True], ids=["private directory", "PROMETHEUS_MULTIPROC_DIR"]
)
def test_preloaded_metrics_appear_exactly(tmp_path: Path, with_directory: bool) -> None:
    (tmp_path / "preloaded_app.py").write_text(PRELOADED_APP)
    env = {}
    if with_directory:
        (tmp_path / "mp").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "mp")
    with Gunicorn(
        tmp_path,
        workers=WORKERS,
        app="preloaded_app:app",
        chdir=tmp_path,
        extra_args=["--preload"],
        env=env,
    ) as g:
        served_by = {int(g.get("/")[2]) for _ in range(REQUESTS)}
        assert served_by <= set(g.worker_pids())
        samples = g.wait_metrics(
            lambda s: value(s, "app_preloaded_total") >= 5 + REQUESTS, what="the preloaded counter"
        )
        master, workers = str(g.pid), {str(p) for p in g.worker_pids()}

        assert (
            value(samples, "app_preloaded_total") == 5 + REQUESTS
        )  # the master's 5 once, not per worker
        assert value(samples, "app_events_total", kind="import") == 2
        assert value(samples, "app_events_total", kind="request") == REQUESTS
        assert value(samples, "app_latency_seconds_count") == 1 + REQUESTS
        assert value(samples, "app_latency_seconds_sum") == pytest.approx(0.5 + 0.05 * REQUESTS)
        assert value(samples, "app_latency_seconds_bucket", le="0.1") == REQUESTS
        assert value(samples, "app_latency_seconds_bucket", le="1.0") == 1 + REQUESTS
        assert value(samples, "app_payload_bytes_count") == 1 + REQUESTS
        assert value(samples, "app_payload_bytes_sum") == 7 + REQUESTS
        assert value(samples, "app_labelled_gauge", shard="a") == 3

        # gauges: the master holds 10, every worker its own 0 (inherited values
        # start from zero in the worker's files, as prometheus_client's do)
        for mode in ("all", "liveall"):
            per_pid = {dict(k)["pid"]: v for k, v in labelled(samples, f"app_gauge_{mode}").items()}
            assert per_pid == {master: 10.0, **{w: 0.0 for w in workers}}, mode
        expected = {
            "sum": 10,
            "livesum": 10,
            "max": 10,
            "livemax": 10,
            "min": 0,
            "livemin": 0,
            "mostrecent": 10,
            "livemostrecent": 10,
        }
        got = {mode: value(samples, f"app_gauge_{mode}") for mode in expected}
        assert got == expected


def test_no_directory_is_left_when_gunicorn_fails_to_start(tmp_path: Path) -> None:
    """The private directory is made while Gunicorn loads its configuration;
    Gunicorn stopping before its first hook (here: the app cannot be
    imported) must not leave it behind."""
    g = Gunicorn(
        tmp_path,
        app="no_such_module:app",
        chdir=tmp_path,
        extra_args=["--preload"],
        wait_ready=False,
    )
    try:
        assert g.proc.wait(20) != 0
    finally:
        g.stop()
    # private directories are named after the master's pid (other tests may run beside this one)
    assert [
        name for name in os.listdir("/dev/shm") if name.startswith(f"gunicorn-prometheus-{g.pid}-")
    ] == []
