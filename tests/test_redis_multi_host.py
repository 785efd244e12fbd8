"""Several hosts (instances) sharing one Redis and one key prefix.

Two simulated hosts have workers with the *same PID*: their multiprocess
directories hold files named ``{type}_1234.db`` in both. Each host's
manager (REDIS_INSTANCE_ID=hostA / hostB) mirrors its own directory. Keys
must not collide, and the merged Redis view must sum both hosts exactly
(and keep both hosts' `all` gauges apart by their pid label).

Also: two hosts mirroring concurrently while they count; and a dead worker
folded on one host leaves the other host's series alone.
"""

from __future__ import annotations

import os

import pytest

from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector
from redis_support import (
    RedisServer,
    in_child,
    manager_env,
    samples_of,
    series_keys,
    setup_and_lead,
)

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = [pytest.mark.usefixtures("series_layout"), pytest.mark.interpreter_independent]

SAME_PID = "1234"


def _write_files(directory: str, amount: int) -> int:
    """A process with native values on `directory` that records, then
    exits; its pid."""
    from prometheus_client import Counter, Gauge, Histogram, Summary

    import gunicorn_prometheus_exporter as gpe

    gpe.enable_native_values(directory)
    Counter("requests", "Requests.", ["path"], registry=None).labels("/x").inc(amount)
    Gauge("seen", "Seen.", multiprocess_mode="all", registry=None).set(amount)
    Gauge("peak", "Peak.", multiprocess_mode="max", registry=None).set(amount * 10)
    Gauge("low", "Low.", multiprocess_mode="min", registry=None).set(amount * 10)
    Gauge("busy", "Busy.", multiprocess_mode="livesum", registry=None).set(amount)
    hist = Histogram("latency", "Latency.", buckets=(1.0, 10.0), registry=None)
    for _ in range(amount):
        hist.observe(amount)
    Summary("size", "Size.", registry=None).observe(amount)
    return os.getpid()


def _host_directory(tmp_path, name: str, amount: int) -> str:
    directory = tmp_path / name
    directory.mkdir()
    pid = in_child(_write_files, str(directory), amount)
    for path in directory.iterdir():
        if path.name.endswith(f"_{pid}.db"):
            path.rename(directory / path.name.replace(f"_{pid}.db", f"_{SAME_PID}.db"))
    return str(directory)


def _mirror_once() -> list[str]:
    manager = setup_and_lead()
    keys = sorted(k.decode() for k in manager.get_client().keys("gunicorn:*"))
    manager.teardown()
    return keys


def _fold_same_pid() -> None:
    manager = setup_and_lead()
    manager.cleanup_dead_worker(SAME_PID)
    manager.teardown()


def _two_hosts(redis_srv: RedisServer, tmp_path) -> dict[str, str]:
    dirs = {"hostA": _host_directory(tmp_path, "a", 3), "hostB": _host_directory(tmp_path, "b", 5)}
    for name, directory in dirs.items():
        assert sorted(os.listdir(directory)) == sorted(
            f"{store}_{SAME_PID}.db"
            for store in (
                "counter",
                "gauge_all",
                "gauge_max",
                "gauge_min",
                "gauge_livesum",
                "histogram",
                "summary",
            )
        )
        in_child(
            _mirror_once,
            env=manager_env(
                redis_srv,
                REDIS_INSTANCE_ID=name,
                PROMETHEUS_MULTIPROC_DIR=directory,
                REDIS_FLUSH_INTERVAL=60,
            ),
        )
    return dirs


EXPECTED = {
    ("requests_total", (("path", "/x"),)): 8.0,
    ("seen", (("pid", f"{SAME_PID}@hostA"),)): 3.0,
    ("seen", (("pid", f"{SAME_PID}@hostB"),)): 5.0,
    ("peak", ()): 50.0,
    ("low", ()): 30.0,
    ("busy", ()): 8.0,
    ("latency_bucket", (("le", "1.0"),)): 0.0,
    ("latency_bucket", (("le", "10.0"),)): 8.0,
    ("latency_bucket", (("le", "+Inf"),)): 8.0,
    ("latency_count", ()): 8.0,
    ("latency_sum", ()): 3.0 * 3 + 5.0 * 5,
    ("size_count", ()): 2.0,
    ("size_sum", ()): 8.0,
}


def test_same_pid_on_two_hosts_does_not_collide(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    _two_hosts(redis_srv, tmp_path)
    keys = series_keys(rclient.keys("gunicorn:*"))
    a = [k for k in keys if f":{SAME_PID}@hostA:" in k]
    b = [k for k in keys if f":{SAME_PID}@hostB:" in k]
    # 11 series each (requests, seen, peak, low, busy, 3 buckets, latency
    # sum, size count and sum), a metric and a meta key each
    assert len(a) == len(b) == 2 * 11
    assert len(keys) == len(a) + len(b)
    # the same series hashes under both hosts
    assert [k.replace("@hostA:", "@") for k in a] == [k.replace("@hostB:", "@") for k in b]
    for key in a:
        other = key.replace("@hostA:", "@hostB:")
        if ":metric:" in key and ":counter:" in key:
            assert rclient.hget(key, "value") == b"3"
            assert rclient.hget(other, "value") == b"5"
    body = RedisMultiProcessCollector(None, rclient).render()
    assert samples_of(body) == EXPECTED


def test_fold_on_one_host_leaves_the_other_alone(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    dirs = _two_hosts(redis_srv, tmp_path)
    b_before = {k: rclient.hgetall(k) for k in rclient.keys(f"gunicorn:*:{SAME_PID}@hostB:*")}
    in_child(
        _fold_same_pid,
        env=manager_env(
            redis_srv,
            REDIS_INSTANCE_ID="hostA",
            PROMETHEUS_MULTIPROC_DIR=dirs["hostA"],
            REDIS_FLUSH_INTERVAL=60,
        ),
    )
    keys = series_keys(rclient.keys("gunicorn:*"))
    assert [k for k in keys if f":{SAME_PID}@hostA:" in k and ":gauge_all:" not in k] == []
    assert any(":archive@hostA:" in k for k in keys)
    assert not any(":archive@hostB:" in k for k in keys)
    assert {
        k: rclient.hgetall(k) for k in rclient.keys(f"gunicorn:*:{SAME_PID}@hostB:*")
    } == b_before
    expected = dict(EXPECTED)
    expected[("busy", ())] = 5.0  # host A's live gauge went with its worker
    assert samples_of(RedisMultiProcessCollector(None, rclient).render()) == expected


def _host_counting(directory: str, n: int) -> None:
    from prometheus_client import Counter, Gauge

    manager = setup_and_lead()
    counter = Counter("hits", "Hits.", registry=None)
    gauge = Gauge("host_up", "Up.", multiprocess_mode="all", registry=None)
    gauge.set(1)
    for i in range(n):
        counter.inc()
        if i % 1000 == 0:
            manager._mirror.pass_now()
    manager.teardown()


def _two_hosts_at_once(env_a: dict, env_b: dict, n: int) -> list[int]:
    pids = []
    for env in (env_a, env_b):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.environ.update(env)
                _host_counting(env["PROMETHEUS_MULTIPROC_DIR"], n)
                status = 0
            finally:
                os._exit(status)
        pids.append(pid)
    return [os.waitpid(pid, 0)[1] for pid in pids]


def test_two_hosts_mirroring_concurrently(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    n = 20_000
    env_a = manager_env(
        redis_srv,
        REDIS_INSTANCE_ID="hostA",
        REDIS_FLUSH_INTERVAL=0.01,
        PROMETHEUS_MULTIPROC_DIR=tmp_path / "a",
    )
    env_b = dict(env_a, REDIS_INSTANCE_ID="hostB", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "b"))
    assert in_child(_two_hosts_at_once, env_a, env_b, n) == [0, 0]
    samples = samples_of(RedisMultiProcessCollector(None, rclient).render())
    assert samples[("hits_total", ())] == 2.0 * n
    ups = {labels: v for (name, labels), v in samples.items() if name == "host_up"}
    assert len(ups) == 2 and set(ups.values()) == {1.0}
    assert {dict(labels)["pid"].split("@")[1] for labels in ups} == {"hostA", "hostB"}
