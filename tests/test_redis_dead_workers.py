"""Dead workers in Redis mode.

Workers are forked from a master that set up Redis storage; one is killed
with SIGKILL and ``manager.cleanup_dead_worker(pid)`` folds its files into
the instance's archive; the next mirror pass deletes its keys atomically.

* Totals (counters, histograms, summaries, max gauges) are unchanged in the
  Redis view; the dead worker's keys are gone (but its `all` gauges, whose
  pid label is the data, as prometheus_client keeps them); archive keys are
  there; its live gauges are gone.
* Repeated worker restarts do not grow the number of Redis keys.
* A reader scraping while workers are folded never sees a total off.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest

import gunicorn_prometheus_exporter as gpe
from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector
from redis_support import (
    RedisServer,
    families_of,
    in_child,
    manager_env,
    normalise_pids,
    samples_of,
    series_keys,
    setup_and_lead,
)

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
pytestmark = pytest.mark.usefixtures("series_layout")


def _metrics() -> dict:
    from prometheus_client import Counter, Gauge, Histogram, Summary

    return {
        "requests": Counter("requests", "R.", ["method"], registry=None),
        "latency": Histogram("latency", "L.", buckets=(0.5, 5.0), registry=None),
        "size": Summary("size", "S.", registry=None),
        "busy": Gauge("busy", "B.", multiprocess_mode="livesum", registry=None),
        "peak": Gauge("peak", "P.", multiprocess_mode="max", registry=None),
        "seen": Gauge("seen", "A.", multiprocess_mode="all", registry=None),
        "alive": Gauge("alive", "LA.", multiprocess_mode="liveall", registry=None),
        "total": Gauge("total", "SUM.", multiprocess_mode="sum", registry=None),
    }


def _start_worker(index: int, ready_w: int) -> int:
    """A worker that records, reports ready, then waits to be killed (or
    leaves when its master is gone)."""
    master = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            m = _metrics()
            m["requests"].labels("GET").inc(3)
            m["latency"].observe(0.2)
            m["latency"].observe(4)
            m["size"].observe(100)
            m["busy"].inc()
            m["peak"].set(10 * (index + 1))
            m["seen"].set(index)
            m["alive"].set(index)
            m["total"].inc(2)
            os.write(ready_w, b"r")
            while os.getppid() == master:
                time.sleep(0.05)
        finally:
            os._exit(0)
    return pid


def _kill_and_clean(directory: str) -> dict:
    manager = setup_and_lead()
    client = manager.get_client()
    collector = manager.get_collector()
    ready_r, ready_w = os.pipe()
    workers = [_start_worker(i, ready_w) for i in range(3)]
    for _ in workers:
        os.read(ready_r, 1)
    manager._mirror.pass_now()
    out = {
        "workers": workers,
        "before": collector.render(),
        "keys_before": series_keys(client.keys("gunicorn:*")),
    }
    victim = workers[2]  # it set peak to 30, the maximum
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    manager.cleanup_dead_worker(victim)  # folds and passes
    out["after"] = collector.render()
    out["directory_after"] = gpe.render_directory(directory)
    out["keys_after"] = series_keys(client.keys("gunicorn:*"))
    out["files"] = sorted(f for f in os.listdir(directory) if f.endswith(".db"))
    for pid in workers[:2]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    manager.teardown()
    return out


def test_killed_worker_is_folded(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="h", REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_kill_and_clean, str(tmp_path), env=env)
    w0, w1, victim = result["workers"]
    before = samples_of(result["before"])
    after = samples_of(result["after"])
    totals = {
        ("requests_total", (("method", "GET"),)): 9.0,
        ("latency_bucket", (("le", "0.5"),)): 3.0,
        ("latency_bucket", (("le", "5.0"),)): 6.0,
        ("latency_bucket", (("le", "+Inf"),)): 6.0,
        ("latency_count", ()): 6.0,
        ("latency_sum", ()): 3 * 4.2,
        ("size_count", ()): 3.0,
        ("size_sum", ()): 300.0,
        ("peak", ()): 30.0,
        ("total", ()): 6.0,
    }
    for key, value in totals.items():
        assert before[key] == value, key
        assert after[key] == value, key  # nothing goes backwards
    assert before[("busy", ())] == 3.0
    assert after[("busy", ())] == 2.0  # its live gauge is gone
    for i, pid in enumerate((w0, w1, victim)):
        assert before[("seen", (("pid", f"{pid}@h"),))] == i
        assert before[("alive", (("pid", f"{pid}@h"),))] == i
    assert ("alive", (("pid", f"{victim}@h"),)) not in after
    assert after[("seen", (("pid", f"{victim}@h"),))] == 2  # `all` gauges stay, as in files
    assert len(after) == len(before) - 1

    # the Redis view and the directory agree
    assert families_of(normalise_pids(result["after"].decode())) == families_of(
        result["directory_after"]
    )

    # its keys are gone, apart from the `all` gauge; archives are there
    victim_keys = [k for k in result["keys_after"] if f":{victim}@h:" in k]
    assert victim_keys and all(k.startswith("gunicorn:gauge_all:") for k in victim_keys), (
        victim_keys
    )
    for store in ("counter", "histogram", "summary", "gauge_max", "gauge_sum"):
        assert any(
            k.startswith(f"gunicorn:{store}:archive@h:metric:") for k in result["keys_after"]
        ), store
        assert any(
            k.startswith(f"gunicorn:{store}:archive@h:meta:") for k in result["keys_after"]
        ), store
    assert not any("gauge_live" in k and "archive" in k for k in result["keys_after"])
    assert f"counter_{victim}.db" not in result["files"]
    assert "counter_archive.db" in result["files"]
    # the live workers' keys are untouched
    for pid in (w0, w1):
        assert [k for k in result["keys_before"] if f":{pid}@h:" in k] == [
            k for k in result["keys_after"] if f":{pid}@h:" in k
        ]


ROUNDS = 8


def _restarts(directory: str) -> dict:
    manager = setup_and_lead()
    client = manager.get_client()
    counts = []
    renders = []
    ready_r, ready_w = os.pipe()
    for i in range(ROUNDS):
        pid = _start_worker(i, ready_w)
        os.read(ready_r, 1)
        manager._mirror.pass_now()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        manager.cleanup_dead_worker(pid)
        counts.append(len(series_keys(client.keys("gunicorn:*"))))
        renders.append(samples_of(manager.get_collector().render()))
    manager.teardown()
    return {"counts": counts, "renders": renders}


def test_repeated_restarts_do_not_grow_redis(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="h", REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_restarts, str(tmp_path), env=env)
    counts = result["counts"]
    # `all` gauges are kept per pid (their pid label is the data), 2 keys
    # each; everything else lives on in a fixed number of archive keys
    growth = [b - a for a, b in itertools.pairwise(counts)]
    assert growth == [2] * (ROUNDS - 1), counts
    final = result["renders"][-1]
    assert final[("requests_total", (("method", "GET"),))] == 3.0 * ROUNDS
    assert final[("latency_count", ())] == 2.0 * ROUNDS
    assert final[("size_sum", ())] == 100.0 * ROUNDS
    assert final[("peak", ())] == 10.0 * ROUNDS
    assert final[("total", ())] == 2.0 * ROUNDS
    assert final.get(("busy", ()), 0.0) == 0.0
    assert not any(name == "alive" for name, _ in final)
    for i, render in enumerate(result["renders"]):
        assert render[("requests_total", (("method", "GET"),))] == 3.0 * (i + 1)


def _restarts_without_all_gauges(directory: str) -> dict:
    from prometheus_client import Counter, Gauge, Histogram

    manager = setup_and_lead()
    client = manager.get_client()
    counts = []
    for i in range(ROUNDS):
        pid = os.fork()
        if pid == 0:
            try:
                Counter("jobs", "J.", ["kind"], registry=None).labels("a").inc()
                Histogram("lat", "L.", buckets=(1.0,), registry=None).observe(0.5)
                Gauge("busy", "B.", multiprocess_mode="livesum", registry=None).inc()
                Gauge("low", "M.", multiprocess_mode="min", registry=None).set(100 - i)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        manager._mirror.pass_now()
        manager.cleanup_dead_worker(pid)
        counts.append(len(series_keys(client.keys("gunicorn:*"))))
    render = samples_of(manager.get_collector().render())
    manager.teardown()
    return {"counts": counts, "render": render}


def test_restarts_keep_a_constant_number_of_keys(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="h", REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_restarts_without_all_gauges, str(tmp_path), env=env)
    assert result["counts"] == [result["counts"][0]] * ROUNDS
    # archive metric+meta: jobs, 2 buckets, sum, low
    assert result["counts"][0] == 2 * 5
    assert result["render"] == {
        ("jobs_total", (("kind", "a"),)): float(ROUNDS),
        ("lat_bucket", (("le", "1.0"),)): float(ROUNDS),
        ("lat_bucket", (("le", "+Inf"),)): float(ROUNDS),
        ("lat_count", ()): float(ROUNDS),
        ("lat_sum", ()): 0.5 * ROUNDS,
        ("low", ()): float(100 - ROUNDS + 1),
    }


WORKERS = 12


def _fold_while_reading(directory: str) -> dict:
    from prometheus_client import Counter, Histogram

    manager = setup_and_lead()
    pids = []
    for i in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            try:
                Counter("jobs", "J.", registry=None).inc(i + 1)
                Histogram("lat", "L.", buckets=(1.0,), registry=None).observe(2)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        pids.append(pid)
    manager._mirror.pass_now()
    port = int(os.environ["REDIS_PORT"])
    results_r, results_w = os.pipe()
    stop_r, stop_w = os.pipe()
    reader = os.fork()
    if reader == 0:
        try:
            os.set_blocking(stop_r, False)
            collector = RedisMultiProcessCollector(None, RedisClient(host="127.0.0.1", port=port))
            lines = []
            while True:
                s = samples_of(collector.render())
                lines.append(
                    f"{s.get(('jobs_total', ()))} {s.get(('lat_count', ()))} "
                    f"{collector.stats()['attempts']}"
                )
                try:
                    if os.read(stop_r, 1):
                        break
                except BlockingIOError:
                    pass
            os.write(results_w, "\n".join(lines).encode() + b"\n\n")
        finally:
            os._exit(0)
    time.sleep(0.05)
    for pid in pids:
        manager.cleanup_dead_worker(pid)
        time.sleep(0.01)
    time.sleep(0.05)
    os.write(stop_w, b"s")
    data = b""
    while not data.endswith(b"\n\n"):
        data += os.read(results_r, 1 << 16)
    os.waitpid(reader, 0)
    manager.teardown()
    return {"lines": data.decode().split("\n")[:-2]}


def test_scrapes_during_folds_are_exact(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="h", REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_fold_while_reading, str(tmp_path), env=env)
    lines = result["lines"]
    assert len(lines) >= 10, lines
    expected = f"{float(sum(range(1, WORKERS + 1)))} {float(WORKERS)}"
    wrong = [line for line in lines if not line.startswith(expected + " ")]
    assert not wrong, wrong[:5]
