"""The instance layout (REDIS_LAYOUT=instance, the default) at fleet scale:
one hash per instance, and fleet totals that never go backwards when
instances leave (graceful exit), disappear (killed; their TTL passes), race
to fold each other or come back after being taken for gone. Real
redis-server and real Gunicorn; the totals are what was counted."""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector
from gunicorn_runner import Agent, Gunicorn, value, wait_for
from redis_support import samples_of

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

PREFIX = "gunicorn"


def counter_key(name: str, **labels: str) -> str:
    return mmap_key(name, f"{name}_total", tuple(labels), tuple(labels.values()), "help")


def gauge_key(name: str, **labels: str) -> str:
    return mmap_key(name, name, tuple(labels), tuple(labels.values()), "help")


def write(directory: Path, store: str, pid: int, values: dict[str, float], ts: float = 0.0) -> None:
    d = MmapedDict(str(directory / f"{store}_{pid}.db"))
    for key, v in values.items():
        d.write_value(key, v, ts)
    d.close()


class Instance:
    """A multiprocess directory of `processes` processes and its mirror."""

    def __init__(self, root: Path, name: str, client: RedisClient, ttl: int = 60) -> None:
        self.directory = root / name
        self.directory.mkdir()
        self.logs: list[str] = []
        self.mirror = _native.MirrorService(
            client.native,
            str(self.directory),
            PREFIX,
            name,
            ttl,
            0.1,
            lambda level, message: self.logs.append(message),
        )

    def count(self, pid: int, jobs: float, live: float = 1.0) -> None:
        write(self.directory, "counter", pid, {counter_key("jobs"): jobs})
        write(self.directory, "gauge_livesum", pid, {gauge_key("busy"): live})
        write(self.directory, "gauge_all", pid, {gauge_key("rss"): 100.0 + pid})

    def node(self) -> str:
        token = (self.directory / ".gpe-node").read_text().strip()
        return f"{self.directory.name}@{token}"

    def leave(self) -> None:
        """A graceful exit: the master asks the agent to retire the node."""
        (self.directory / ".gpe-retire").touch()
        self.mirror.start()
        self.mirror.stop()


def totals(client: RedisClient) -> dict:
    return samples_of(RedisMultiProcessCollector(None, client).render())


def jobs(samples: dict) -> float:
    return samples.get(("jobs_total", ()), 0.0)


def busy(samples: dict) -> float:
    return samples.get(("busy", ()), 0.0)


def keys(client: RedisClient, pattern: str = "*") -> set[str]:
    return {k.decode() for k in client.keys(pattern)}


def test_one_hash_per_instance(tmp_path: Path, rclient: RedisClient) -> None:
    a = Instance(tmp_path, "hostA", rclient)
    b = Instance(tmp_path, "hostB", rclient)
    series = {counter_key("jobs", route=str(i)): 1.0 for i in range(300)}
    for pid in (1, 2, 3):
        write(a.directory, "counter", pid, series)
        write(b.directory, "counter", pid, series)
    assert a.mirror.pass_now() and b.mirror.pass_now()
    nodes = {a.node(), b.node()}
    expected = {f"{PREFIX}:{{fleet}}:nodes"} | {
        f"{PREFIX}:{{{n}}}:{what}" for n in nodes for what in ("view", "values", "marker", "alive")
    }
    assert keys(rclient) == expected
    # merged over the processes: one field per series
    for n in nodes:
        assert rclient.execute_command("HLEN", f"{PREFIX}:{{{n}}}:view") == 300
    samples = totals(rclient)
    assert sum(v for (name, _), v in samples.items() if name == "jobs_total") == 2 * 3 * 300


def test_graceful_exit_folds_into_the_archive(tmp_path: Path, rclient: RedisClient) -> None:
    a = Instance(tmp_path, "hostA", rclient)
    b = Instance(tmp_path, "hostB", rclient)
    a.count(1, 3.0)
    a.count(2, 4.0)
    b.count(7, 10.0)
    assert a.mirror.pass_now() and b.mirror.pass_now()
    before = totals(rclient)
    assert (jobs(before), busy(before)) == (17.0, 3.0)
    node = a.node()

    a.leave()
    after = totals(rclient)
    assert jobs(after) == 17.0, after  # the counts stay
    assert busy(after) == 1.0  # the live gauges of A went with it
    assert not [k for k in after if k[0] == "rss" and "hostA" in str(k)]  # and its per-process ones
    assert [k for k in after if k[0] == "rss" and "hostB" in str(k)]
    left = keys(rclient, f"*{node}*")
    assert left == {f"{PREFIX}:{{{node}}}:marker"}, left  # its tombstone only (expires in a day)
    assert rclient.execute_command("PTTL", f"{PREFIX}:{{{node}}}:marker") > 0
    assert rclient.execute_command("ZRANGE", f"{PREFIX}:{{fleet}}:nodes", 0, -1) == [
        b.node().encode()
    ]
    assert not (a.directory / ".gpe-node").exists()  # a next run is a new node


def test_killed_instance_is_folded_once_its_ttl_passed(
    tmp_path: Path, rclient: RedisClient
) -> None:
    a = Instance(tmp_path, "hostA", rclient, ttl=1)
    b = Instance(tmp_path, "hostB", rclient)
    a.count(1, 5.0)
    b.count(2, 6.0)
    assert a.mirror.pass_now() and b.mirror.pass_now()
    node = a.node()
    assert jobs(totals(rclient)) == 11.0
    time.sleep(1.1)  # A's mirror is gone (killed): its deadline passes
    # Any reader folds it; the data keys outlive the deadline by a TTL.
    after = totals(rclient)
    assert (jobs(after), busy(after)) == (11.0, 1.0)
    assert keys(rclient, f"*{node}*") == {f"{PREFIX}:{{{node}}}:marker"}
    for _ in range(3):
        assert jobs(totals(rclient)) == 11.0
    archive = rclient.hgetall(f"{PREFIX}:{{fleet}}:archive")
    assert [float(v) for v in archive.values()] == [5.0]


def test_a_node_taken_for_gone_counts_once(tmp_path: Path, rclient: RedisClient) -> None:
    """A mirror stalled past its TTL (an outage) was folded by a sidecar: it
    goes on as a new node that publishes only what was counted since."""
    a = Instance(tmp_path, "hostA", rclient, ttl=1)
    a.count(1, 5.0)
    assert a.mirror.pass_now()
    old = a.node()
    time.sleep(1.1)
    assert _native.redis_fold_expired(rclient.native, PREFIX)[2] == 1
    assert jobs(totals(rclient)) == 5.0
    a.count(1, 8.0)
    assert a.mirror.pass_now()
    assert a.node() != old
    assert any("taken for gone" in m for m in a.logs), a.logs
    samples = totals(rclient)
    assert (jobs(samples), busy(samples)) == (8.0, 1.0)
    a.count(1, 9.0)
    assert a.mirror.pass_now()
    assert jobs(totals(rclient)) == 9.0


def test_folders_racing_fold_each_node_once(tmp_path: Path, redis_srv) -> None:
    """Four folders at once on 12 gone nodes of 1,200 series each (three
    chunks each), while a reader scrapes: every scrape shows the whole total,
    never a chunk twice or not at all."""
    client = RedisClient(**redis_srv.client_kwargs())
    series = {counter_key("jobs", route=str(i)): 1.0 for i in range(1200)}
    instances = []
    for i in range(12):
        inst = Instance(tmp_path, f"host{i}", client, ttl=1)
        write(inst.directory, "counter", 1, series)
        assert inst.mirror.pass_now()
        instances.append(inst)
    expected = 12 * 1200
    assert sum(v for (n, _), v in totals(client).items() if n == "jobs_total") == expected
    time.sleep(1.1)
    errors: list[BaseException] = []
    seen: list[float] = []
    done = threading.Event()

    def fold() -> None:
        own = RedisClient(**redis_srv.client_kwargs())
        try:
            while _native.redis_fold_expired(own.native, PREFIX)[3]:
                pass
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def scrape() -> None:
        # The collector folds gone nodes too: a fifth folder.
        own = RedisClient(**redis_srv.client_kwargs())
        while not done.is_set():
            samples = totals(own)
            seen.append(sum(v for (n, _), v in samples.items() if n == "jobs_total"))

    threads = [threading.Thread(target=fold) for _ in range(4)]
    reader = threading.Thread(target=scrape)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    reader.join(60)
    assert not errors, errors
    assert seen and set(seen) == {float(expected)}, sorted(set(seen))
    assert client.execute_command("ZCARD", f"{PREFIX}:{{fleet}}:nodes") == 0
    archive = client.hgetall(f"{PREFIX}:{{fleet}}:archive")
    assert len(archive) == 1200 and {float(v) for v in archive.values()} == {12.0}


def test_archive_keeps_min_max_and_mostrecent(tmp_path: Path, rclient: RedisClient) -> None:
    """Gauges of the modes the archive keeps fold by their mode, as
    prometheus_client merges the files of dead processes."""
    a = Instance(tmp_path, "hostA", rclient)
    b = Instance(tmp_path, "hostB", rclient)
    write(a.directory, "gauge_min", 1, {gauge_key("low"): 3.0})
    write(a.directory, "gauge_max", 1, {gauge_key("high"): 9.0})
    write(a.directory, "gauge_sum", 1, {gauge_key("total"): 2.5})
    write(a.directory, "gauge_mostrecent", 1, {gauge_key("last"): 1.0}, ts=200.0)
    write(b.directory, "gauge_min", 2, {gauge_key("low"): 4.0})
    write(b.directory, "gauge_max", 2, {gauge_key("high"): 8.0})
    write(b.directory, "gauge_sum", 2, {gauge_key("total"): 0.5})
    write(b.directory, "gauge_mostrecent", 2, {gauge_key("last"): 2.0}, ts=100.0)
    assert a.mirror.pass_now() and b.mirror.pass_now()
    expected = {("low", ()): 3.0, ("high", ()): 9.0, ("total", ()): 3.0, ("last", ()): 1.0}
    assert {k: v for k, v in totals(rclient).items() if k in expected} == expected
    a.leave()
    assert {k: v for k, v in totals(rclient).items() if k in expected} == expected
    b.leave()
    assert {k: v for k, v in totals(rclient).items() if k in expected} == expected


def _requests(samples) -> float:
    return value(samples, "gunicorn_worker_requests_total")


def test_gunicorn_churn_keeps_totals_monotonic(tmp_path: Path, redis) -> None:
    """Three real Gunicorn instances and a sidecar: one leaves gracefully,
    one is SIGKILLed (master, workers and agent) and folded when its TTL
    passed; the sidecar's total never goes down and ends exact."""
    sidecar = Agent(
        tmp_path,
        ["--source", "redis"],
        name="sidecar",
        env={k: v for k, v in redis.env().items() if k != "REDIS_ENABLED"},
    )
    instances: dict[str, Gunicorn] = {}
    seen: list[float] = []
    try:
        for name in ("hostA", "hostB", "hostC"):
            env = {
                **redis.env(),
                "REDIS_INSTANCE_ID": name,
                "REDIS_FLUSH_INTERVAL": "0.2",
                "REDIS_TTL_SECONDS": "2",
            }
            instances[name] = Gunicorn(tmp_path, env=env, wait_ready=False, name=name)
            instances[name].wait_serving()
        sent = 0
        for g in instances.values():
            for _ in range(5):
                assert g.status("/") == 200
                sent += 1

        def total() -> float:
            seen.append(_requests(sidecar.samples()))
            return seen[-1]

        wait_for(lambda: total() == sent, 10, message=lambda: f"{sent} requests: {seen[-3:]}")
        instances.pop("hostA").stop()  # graceful: TERM the master
        # its agent folded it on the way out, not its TTL
        assert not [n for n in redis_command_nodes(redis) if n.startswith("hostA@")]
        wait_for(lambda: total() == sent, 5, message=lambda: f"after A left: {seen[-3:]}")
        killed = instances.pop("hostB")
        os.killpg(killed.pid, signal.SIGKILL)
        deadline = time.monotonic() + 8  # the TTL (2 s) and the grace to fold
        while time.monotonic() < deadline:
            total()
            time.sleep(0.2)
        for _ in range(3):
            assert instances["hostC"].status("/") == 200
            sent += 1
        wait_for(lambda: total() == sent, 5, message=lambda: f"after B was killed: {seen[-3:]}")
        nodes = redis_command_nodes(redis)
        assert len(nodes) == 1 and nodes[0].startswith("hostC@"), nodes
        assert all(b >= a for a, b in itertools.pairwise(seen)), seen
        killed.stop()
    finally:
        for g in instances.values():
            g.stop()
        sidecar.stop()


def redis_command_nodes(redis) -> list[str]:
    from gunicorn_runner import redis_command

    return [
        n.decode() if isinstance(n, bytes) else n
        for n in redis_command(
            redis.port, "ZRANGE", f"{PREFIX}:{{fleet}}:nodes", "0", "-1", password=redis.password
        )
    ]


def test_view_fields_are_documented_json(tmp_path: Path, rclient: RedisClient) -> None:
    """A view field is {store}:{series key}, or {store}:{process}:{series key}
    for the per-process gauges, holding its slot in the values string: after
    a 16-byte header ("gpeview1" and a version), 16 bytes per slot, value and
    timestamp as little-endian doubles."""
    a = Instance(tmp_path, "hostA", rclient)
    a.count(5, 2.0)
    assert a.mirror.pass_now()
    view = rclient.hgetall(f"{PREFIX}:{{{a.node()}}}:view")
    packed = rclient.get(f"{PREFIX}:{{{a.node()}}}:values")
    assert packed[:8] == b"gpeview1"

    def value(slot: bytes) -> float:
        return struct.unpack_from("<dd", packed, 16 + 16 * int(slot))[0]

    fields = {k.decode(): value(v) for k, v in view.items()}
    assert fields[f"counter:{counter_key('jobs')}"] == 2.0
    assert fields[f"gauge_all:5@hostA:{gauge_key('rss')}"] == 105.0
    for field in fields:
        json.loads(field[field.index("[") :])
    assert f"gauge_all:{gauge_key('rss')}" not in fields  # never without its process
