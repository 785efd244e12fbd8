"""The write path in Redis mode: increments are stores into memory-mapped
files; the mirror sends them to Redis.

* Increments never wait for Redis: 100k Counter.inc() while redis-server is
  frozen (SIGSTOP) or down complete fast; the values arrive after it is back.
* Redis restarted (data wiped) while workers increment: after the reconnect
  everything is sent again and totals are exact.
* TTL shorter than the run: no series of a live process expires, all keys
  of an instance carry the same expiry, and once mirroring stops they expire
  together.

Each scenario runs in a forked child that owns its redis-server (it stops,
freezes and restarts it).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from gunicorn_prometheus_exporter.backend import (
    RedisClient,
    RedisError,
    RedisMultiProcessCollector,
    RedisStorageManager,
)
from redis_server import RedisServer
from redis_support import in_child, samples_of, series_keys, setup_and_lead

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = [pytest.mark.usefixtures("series_layout"), pytest.mark.interpreter_independent]


class OwnedServer(RedisServer):
    """A redis-server started by a child; every pid it runs under is noted in
    {directory}/servers.pid so that the test can stop it should the child
    die before it could (a crash, a timeout)."""

    def __init__(self, directory: str) -> None:
        self._pidfile = os.path.join(directory, "servers.pid")
        super().__init__()

    def start(self) -> None:
        super().start()
        with open(self._pidfile, "a") as f:
            f.write(f"{self.process.pid}\n")


@pytest.fixture(autouse=True)
def _stop_orphaned_servers(tmp_path):
    yield
    pidfile = tmp_path / "servers.pid"
    if pidfile.exists():
        for line in pidfile.read_text().split():
            try:  # one we started; gone already if all went well
                with open(f"/proc/{int(line)}/cmdline", "rb") as f:
                    if not f.read().startswith(b"redis-server"):
                        continue  # the pid was reused
                os.kill(int(line), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass


def _start(server: RedisServer, directory: str, **extra: object) -> RedisStorageManager:
    os.environ.update(server.env())
    os.environ.update({"PROMETHEUS_MULTIPROC_DIR": directory, "REDIS_INSTANCE_ID": "h"})
    os.environ.update({k: str(v) for k, v in extra.items()})
    return setup_and_lead()


def _pass_until_it_works(manager: RedisStorageManager, timeout: float = 5.0) -> int:
    """pass_now() until a pass gets through (the client backs off after
    failures); the number of failed attempts."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            assert manager._mirror.pass_now() is True
            return failures
        except RedisError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _render(server: RedisServer) -> dict:
    return samples_of(
        RedisMultiProcessCollector(None, RedisClient(**server.client_kwargs())).render()
    )


# --------------------------------------------------------------------------
# increments never wait for Redis
# --------------------------------------------------------------------------


def _increments_while_redis_is_away(directory: str) -> dict:
    from prometheus_client import Counter, Histogram

    server = OwnedServer(directory)
    try:
        manager = _start(server, directory, REDIS_FLUSH_INTERVAL=0.05, REDIS_SOCKET_TIMEOUT=1)
        counter = Counter("hits", "Hits.", ["path"], registry=None)
        child = counter.labels("/")
        hist = Histogram("lat", "L.", buckets=(1.0,), registry=None)
        child.inc()
        manager._mirror.pass_now()
        out = {"first": _render(server)}

        # frozen: a connection would hang until its timeout
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(0.1)  # let the mirror thread block on it
            start = time.perf_counter()
            for _ in range(100_000):
                child.inc()
            out["frozen_inc_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(10_000):
                hist.observe(0.5)
            out["frozen_observe_seconds"] = time.perf_counter() - start
        finally:
            os.kill(server.process.pid, signal.SIGCONT)

        # down: connections are refused
        server.stop()
        start = time.perf_counter()
        for _ in range(100_000):
            counter.labels("/").inc()
        out["down_inc_seconds"] = time.perf_counter() - start
        time.sleep(0.2)  # the mirror fails a few passes meanwhile
        server.start()  # empty
        out["failed_passes"] = _pass_until_it_works(manager)
        out["after"] = _render(server)
        manager.teardown()
        return out
    finally:
        server.close()


def test_increments_do_not_wait_for_redis(tmp_path) -> None:
    result = in_child(_increments_while_redis_is_away, str(tmp_path))
    zero_histogram = {
        ("lat_bucket", (("le", "1.0"),)): 0.0,
        ("lat_bucket", (("le", "+Inf"),)): 0.0,
        ("lat_count", ()): 0.0,
        ("lat_sum", ()): 0.0,
    }
    assert result["first"] == {("hits_total", (("path", "/"),)): 1.0, **zero_histogram}
    # 100k increments through the prometheus_client API: microseconds each,
    # never a network round trip (a frozen Redis would hold each for 1 s)
    assert result["frozen_inc_seconds"] < 1.0, result
    assert result["frozen_observe_seconds"] < 0.5, result
    assert result["down_inc_seconds"] < 1.0, result
    assert result["after"] == {
        ("hits_total", (("path", "/"),)): 200_001.0,
        ("lat_bucket", (("le", "1.0"),)): 10_000.0,
        ("lat_bucket", (("le", "+Inf"),)): 10_000.0,
        ("lat_count", ()): 10_000.0,
        ("lat_sum", ()): 5_000.0,
    }


# --------------------------------------------------------------------------
# Redis restarted mid-run
# --------------------------------------------------------------------------

WORKERS = 3
ROUNDS = 40
PER_ROUND = 500


def _restart_mid_run(directory: str) -> dict:
    server = OwnedServer(directory)
    try:
        manager = _start(server, directory, REDIS_FLUSH_INTERVAL=0.02)
        ready_r, ready_w = os.pipe()
        pids = []
        for w in range(WORKERS):
            pid = os.fork()
            if pid == 0:
                try:
                    from prometheus_client import Counter, Gauge, Histogram

                    counter = Counter("work", "Work.", ["worker"], registry=None)
                    total = Counter("work_all", "All work.", registry=None)
                    hist = Histogram("size", "S.", buckets=(1.0, 10.0), registry=None)
                    peak = Gauge("peak", "P.", multiprocess_mode="max", registry=None)
                    os.write(ready_w, b"r")
                    for r in range(ROUNDS):
                        for _ in range(PER_ROUND):
                            counter.labels(str(w)).inc()
                            total.inc(0.5)
                        hist.observe(w * 5)
                        peak.set(w * 100 + r)
                        time.sleep(0.01)
                finally:
                    os._exit(0)
            pids.append(pid)
        for _ in range(WORKERS):
            os.read(ready_r, 1)
        time.sleep(0.15)  # some passes go through
        mid = _render(server)
        before = server.process.pid
        server.restart()  # a new redis-server, empty (no persistence); the mirror may refill it at once
        wiped = server.process.pid != before
        for pid in pids:
            os.waitpid(pid, 0)
        _pass_until_it_works(manager)
        final = _render(server)
        keys = series_keys(RedisClient(**server.client_kwargs()).keys("gunicorn:*"))
        manager.teardown()
        return {"mid": mid, "wiped": wiped, "final": final, "keys": keys, "pids": pids}
    finally:
        server.close()


def test_redis_restart_mid_run_loses_nothing(tmp_path) -> None:
    result = in_child(_restart_mid_run, str(tmp_path))
    assert result["wiped"]
    # the restart happened while the workers were still counting
    assert result["mid"].get(("work_all_total", ()), 0) < WORKERS * ROUNDS * PER_ROUND * 0.5
    expected = {
        ("work_total", (("worker", str(w)),)): float(ROUNDS * PER_ROUND) for w in range(WORKERS)
    }
    expected[("work_all_total", ())] = WORKERS * ROUNDS * PER_ROUND * 0.5
    expected[("size_bucket", (("le", "1.0"),))] = float(ROUNDS)  # worker 0 observes 0
    expected[("size_bucket", (("le", "10.0"),))] = float(WORKERS * ROUNDS)  # 0, 5, 10
    expected[("size_bucket", (("le", "+Inf"),))] = float(WORKERS * ROUNDS)
    expected[("size_count", ())] = float(WORKERS * ROUNDS)
    expected[("size_sum", ())] = float(ROUNDS * sum(w * 5 for w in range(WORKERS)))
    expected[("peak", ())] = float((WORKERS - 1) * 100 + ROUNDS - 1)
    assert result["final"] == expected
    # every worker's series are there again, metric and meta
    for pid in result["pids"]:
        assert (
            sum(f":{pid}@h:metric:" in k for k in result["keys"])
            == sum(f":{pid}@h:meta:" in k for k in result["keys"])
            > 0
        )


# --------------------------------------------------------------------------
# TTL
# --------------------------------------------------------------------------


def _expiretimes(client: RedisClient, keys: list[str]) -> list:
    """EXISTS and EXPIRETIME of every key, in one transaction (a consistent
    snapshot: the mirror renews in MULTI/EXEC too)."""
    replies = client.pipeline_execute(
        [["MULTI"], ["EXISTS", *keys], *[["EXPIRETIME", k] for k in keys], ["EXEC"]]
    )
    exec_reply = replies[-1]
    return exec_reply


def _ttl_shorter_than_the_run(directory: str, ttl: int, run_seconds: float) -> dict:
    from prometheus_client import Counter, Gauge, Histogram

    server = OwnedServer(directory)
    try:
        manager = _start(server, directory, REDIS_FLUSH_INTERVAL=0.05, REDIS_TTL_SECONDS=ttl)
        client = RedisClient(**server.client_kwargs())
        Counter("once", "Once.", registry=None).inc()
        Gauge("seen", "S.", multiprocess_mode="all", registry=None).set(1)
        Histogram("lat", "L.", buckets=(1.0,), registry=None).observe(2)
        manager._mirror.pass_now()
        keys = sorted(k.decode() for k in client.keys("gunicorn:*:*:*:*"))
        snapshots = []
        start = time.monotonic()
        while time.monotonic() - start < run_seconds:
            snapshots.append(_expiretimes(client, keys))
            time.sleep(0.02)
        live_render = _render(server)
        manager.teardown()  # mirroring stops (after a last pass)
        stopped = time.monotonic()
        counts = []
        while time.monotonic() - stopped < ttl + 2.5:
            n = client.exists(*keys)
            counts.append(n)
            if n == 0:
                break
            time.sleep(0.01)
        return {
            "keys": keys,
            "snapshots": snapshots,
            "counts": counts,
            "live_render": live_render,
            "gone_after": time.monotonic() - stopped,
        }
    finally:
        server.close()


def _check_ttl_run(result: dict, ttl: int) -> None:
    keys = result["keys"]
    assert len(keys) == 2 * (1 + 1 + 3)  # counter, gauge, histogram (2 buckets, sum)
    missing = [s for s in result["snapshots"] if s[0] != len(keys)]
    assert not missing, (
        f"{len(missing)} of {len(result['snapshots'])} snapshots lack keys: {missing[:3]}"
    )
    assert len(result["live_render"]) == 6
    for snapshot in result["snapshots"]:
        deadlines = set(snapshot[1:])
        assert len(deadlines) == 1, snapshot  # one deadline for the instance
        assert deadlines.pop() > 0
    # the deadline was renewed while the process lived
    assert len({s[1] for s in result["snapshots"]}) >= 2
    # after mirroring stopped: all keys, then none
    assert set(result["counts"]) <= {len(keys), 0}, result["counts"]
    assert result["counts"][-1] == 0
    assert result["gone_after"] <= ttl + 1.5


def test_ttl_shorter_than_the_run(tmp_path) -> None:
    result = in_child(_ttl_shorter_than_the_run, str(tmp_path), 2, 5.0)
    _check_ttl_run(result, 2)


def test_ttl_of_one_second(tmp_path) -> None:
    """Found failing on the 2026-11-25 build.

    REDIS_TTL_SECONDS=1 is valid, but a live process's series
    expire: the deadline is the server time truncated to whole seconds plus
    the TTL (so between TTL-1 and TTL seconds ahead, here between 0 and 1 s),
    renewed only every TTL/3; and expired keys never come back (see
    test_series_come_back_after_their_keys_expired)."""
    result = in_child(_ttl_shorter_than_the_run, str(tmp_path), 1, 3.0)
    _check_ttl_run(result, 1)


def _keys_expired_while_alive(directory: str) -> dict:
    from prometheus_client import Counter, Gauge

    server = OwnedServer(directory)
    try:
        # passes only when asked: the mirror "stalls" for longer than the TTL
        manager = _start(server, directory, REDIS_FLUSH_INTERVAL=60, REDIS_TTL_SECONDS=1)
        client = RedisClient(**server.client_kwargs())
        counter = Counter("jobs", "Jobs.", registry=None)
        Gauge("level", "Level.", multiprocess_mode="max", registry=None).set(7)
        counter.inc()
        manager._mirror.pass_now()
        out = {"first": _render(server)}
        # The mirror renews deadlines every third of the TTL on its own:
        # stop its thread to stall it; pass_now() still runs a pass.
        manager._mirror.stop()
        deadline = time.monotonic() + 5
        while client.keys("gunicorn:*:*:*:*") and time.monotonic() < deadline:
            time.sleep(0.05)
        out["expired"] = _render(server)
        counter.inc()  # one series changes, the other does not
        manager._mirror.pass_now()
        manager._mirror.pass_now()
        out["after"] = _render(server)
        manager.teardown()
        return out
    finally:
        server.close()


def test_series_come_back_after_their_keys_expired(tmp_path) -> None:
    """Found failing on the 2026-11-25 build.

    Keys of a live process that expired anyway (the mirror
    stalled for longer than the TTL: a stopped or overloaded leader, a TTL
    shorter than the flush interval) are never recreated: a renewal only
    sends EXPIREAT (a no-op on a missing key), and a changed value re-sends
    the metric hash but not its meta key, so the reader skips it ("its meta
    key has no original_key"). The series of a live process are gone for
    good."""
    result = in_child(_keys_expired_while_alive, str(tmp_path))
    assert result["first"] == {("jobs_total", ()): 1.0, ("level", ()): 7.0}
    assert result["expired"] == {}
    assert result["after"] == {("jobs_total", ()): 2.0, ("level", ()): 7.0}


def _no_ttl(directory: str) -> dict:
    from prometheus_client import Counter

    server = OwnedServer(directory)
    try:
        manager = _start(server, directory, REDIS_TTL_DISABLED="true")
        Counter("once", "Once.", registry=None).inc()
        manager._mirror.pass_now()
        client = RedisClient(**server.client_kwargs())
        ttls = [client.ttl(k) for k in series_keys(client.keys("gunicorn:*"))]
        manager.teardown()
        return {"ttls": ttls}
    finally:
        server.close()


def test_ttl_disabled_keys_never_expire(tmp_path) -> None:
    assert in_child(_no_ttl, str(tmp_path)) == {"ttls": [-1, -1]}


# --------------------------------------------------------------------------
# many series in one pass
# --------------------------------------------------------------------------


def _many_series(directory: str, n: int) -> dict:
    from prometheus_client import Counter

    server = OwnedServer(directory)
    try:
        manager = _start(server, directory, REDIS_FLUSH_INTERVAL=60)
        counter = Counter("items", "Items.", ["i"], registry=None)
        for i in range(n):
            counter.labels(str(i)).inc(i)
        manager._mirror.pass_now()  # n new series in one file, in one pass
        for i in range(n):
            counter.labels(str(i)).inc()
        manager._mirror.pass_now()
        render = _render(server)
        manager.teardown()
        return render
    finally:
        server.close()


def test_many_new_series_in_one_pass(tmp_path) -> None:
    """Crashed the 2026-11-25 build (fixed since in the working tree).

    Mirror::pass keeps pointers to the entries of a
    file's std::vector while it appends new entries to it; when the vector
    reallocates (more than 16 new series of one file in one pass) the pass
    writes through dangling pointers: heap corruption, the process aborts
    ("free(): invalid pointer")."""
    n = 100
    result = in_child(_many_series, str(tmp_path), n)
    assert result == {("items_total", (("i", str(i)),)): float(i + 1) for i in range(n)}
