"""RedisStorageDict against a real Redis: read_value/write_value, the
mapping protocol (__setitem__, __getitem__, __delitem__, __contains__,
__iter__, __len__, keys, values, items, clear, update), the key layout and
TTL of what it writes, isolation between stores and processes, what the
collector reads from it, and cleanup_dead_worker without a multiprocess
directory (folding in Redis itself).

Everything here runs in the pytest process: the dict and the collector
change no global state. The global manager singleton is reset around the
cleanup tests.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from gunicorn_prometheus_exporter.backend import (
    RedisClient,
    RedisMultiProcessCollector,
    RedisStorageDict,
    redis_key,
)
from gunicorn_prometheus_exporter.backend.service import manager as manager_module
from redis_support import samples_of

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
pytestmark = pytest.mark.usefixtures("series_layout")

K1 = redis_key("reqs", "reqs_total", ["path"], ["/a"], "Requests.")
K2 = redis_key("reqs", "reqs_total", ["path"], ['/b "é"\n'], "Requests.")
K3 = redis_key("reqs", "reqs_created", ["path"], ["/a"], "Requests.")


@pytest.fixture(autouse=True)
def clean_env(no_exporter_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch = no_exporter_env
    monkeypatch.setenv("REDIS_INSTANCE_ID", "h")
    return monkeypatch


@pytest.fixture
def store(rclient: RedisClient) -> RedisStorageDict:
    return RedisStorageDict(rclient, "gunicorn", "counter", process="100@h")


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_constructor_attributes(rclient: RedisClient) -> None:
    store = RedisStorageDict(rclient, "pfx", "gauge", "max", process="7@h")
    assert store.key_prefix == "pfx"
    assert store.redis_client is rclient
    assert store.process == "7@h"
    assert RedisStorageDict(rclient, process="7@h").key_prefix == "gunicorn"


def test_default_process_is_pid_at_instance(rclient: RedisClient) -> None:
    assert RedisStorageDict(rclient).process == f"{os.getpid()}@h"


def test_write_value_and_read_value(store: RedisStorageDict, rclient: RedisClient) -> None:
    assert store.read_value(K1) == (0.0, 0.0)
    store.write_value(K1, 5.0, timestamp=1.5)
    assert store.read_value(K1) == (5.0, 1.5)
    store.write_value(K1, 0.1 + 0.2, timestamp=2.0)
    assert store.read_value(K1) == (0.1 + 0.2, 2.0)  # exact round trip
    store.write_value(K1, float("inf"), timestamp=0)
    assert store.read_value(K1) == (float("inf"), 0.0)

    metric = f"gunicorn:counter:100@h:metric:{md5(K1)}"
    meta = f"gunicorn:counter:100@h:meta:{md5(K1)}"
    assert rclient.hgetall(meta) == {
        b"original_key": K1.encode(),
        b"typ": b"counter",
        b"multiprocess_mode": b"",
    }
    assert set(rclient.hgetall(metric)) == {b"value", b"timestamp"}
    # the seed's TTL, 300 s by default, on both keys
    assert 299 <= rclient.ttl(metric) <= 300
    assert 299 <= rclient.ttl(meta) <= 300


def test_write_value_takes_the_server_time(store: RedisStorageDict) -> None:
    before = time.time()
    store.write_value(K1, 1.0)
    value, timestamp = store.read_value(K1)
    assert value == 1.0
    assert before - 1 <= timestamp <= time.time() + 1


def test_ttl_setting_and_disabling(
    clean_env: pytest.MonkeyPatch, store: RedisStorageDict, rclient: RedisClient
) -> None:
    clean_env.setenv("REDIS_TTL_SECONDS", "60")
    store.write_value(K1, 1.0)
    assert 59 <= rclient.ttl(f"gunicorn:counter:100@h:metric:{md5(K1)}") <= 60
    clean_env.setenv("REDIS_TTL_DISABLED", "true")
    store.write_value(K2, 1.0)
    assert rclient.ttl(f"gunicorn:counter:100@h:metric:{md5(K2)}") == -1


def test_gauge_store_layout(rclient: RedisClient) -> None:
    store = RedisStorageDict(rclient, "app:m", "gauge", "livesum", process="9@h")
    key = redis_key("busy", "busy", [], [], "Busy.")
    store[key] = 3.0
    assert rclient.hgetall(f"app:m:gauge_livesum:9@h:meta:{md5(key)}") == {
        b"original_key": key.encode(),
        b"typ": b"gauge",
        b"multiprocess_mode": b"livesum",
    }
    assert rclient.hget(f"app:m:gauge_livesum:9@h:metric:{md5(key)}", "value") == b"3"


def test_item_access(store: RedisStorageDict) -> None:
    assert K1 not in store
    with pytest.raises(KeyError):
        store[K1]
    store[K1] = 2.5
    assert K1 in store
    assert store[K1] == 2.5
    assert store.read_value(K1) == (2.5, 0.0)
    assert store.get(K2) is None
    assert store.get(K2, 7) == 7
    assert 42 not in store  # not a str
    del store[K1]
    assert K1 not in store
    with pytest.raises(KeyError):
        del store[K1]


def test_update_with_mapping_and_pairs(store: RedisStorageDict) -> None:
    store.update({K1: 1.0, K2: 2.0})
    store.update([(K3, 3.0)])
    store.update(**{})
    assert (store[K1], store[K2], store[K3]) == (1.0, 2.0, 3.0)


def test_iteration_len_keys_values_items(store: RedisStorageDict) -> None:
    store.update({K1: 1.0, K2: 2.0, K3: 3.0})
    assert len(store) == 3
    assert sorted(store) == sorted([K1, K2, K3])
    assert sorted(store.keys()) == sorted([K1, K2, K3])
    assert sorted(store.values()) == [1.0, 2.0, 3.0]
    assert sorted(store.items()) == sorted([(K1, 1.0), (K2, 2.0), (K3, 3.0)])
    assert dict(store) == {K1: 1.0, K2: 2.0, K3: 3.0}
    del store[K2]
    assert len(store) == 2 and sorted(store) == sorted([K1, K3])


def test_clear(store: RedisStorageDict, rclient: RedisClient) -> None:
    other = RedisStorageDict(rclient, "gunicorn", "counter", process="200@h")
    other[K1] = 9.0
    store.update({K1: 1.0, K2: 2.0})
    store.clear()
    assert len(store) == 0
    assert K1 not in store
    assert other[K1] == 9.0  # another process's store is untouched
    assert rclient.keys("gunicorn:counter:100@h:*") == []


def test_stores_are_isolated(rclient: RedisClient) -> None:
    a = RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")
    b = RedisStorageDict(rclient, "gunicorn", "counter", process="2@h")
    c = RedisStorageDict(rclient, "gunicorn", "gauge", "max", process="1@h")
    d = RedisStorageDict(rclient, "other", "counter", process="1@h")
    a[K1] = 1.0
    assert K1 not in b and K1 not in c and K1 not in d
    b[K1] = 2.0
    c[K1] = 3.0
    d[K1] = 4.0
    assert (a[K1], b[K1], c[K1], d[K1]) == (1.0, 2.0, 3.0, 4.0)


def test_isolated_iteration(rclient: RedisClient) -> None:
    a = RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")
    b = RedisStorageDict(rclient, "gunicorn", "counter", process="11@h")  # a prefix of nothing
    a[K1] = 1.0
    b[K2] = 2.0
    assert list(a) == [K1]
    assert list(b) == [K2]


def test_collector_reads_what_the_dicts_wrote(rclient: RedisClient) -> None:
    key = redis_key("reqs", "reqs_total", ["path"], ["/a"], "Requests.")
    RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")[key] = 2.0
    RedisStorageDict(rclient, "gunicorn", "counter", process="2@h")[key] = 3.5
    peak = redis_key("peak", "peak", [], [], "Peak.")
    RedisStorageDict(rclient, "gunicorn", "gauge", "max", process="1@h")[peak] = 4.0
    RedisStorageDict(rclient, "gunicorn", "gauge", "max", process="2@h")[peak] = 9.0
    body = RedisMultiProcessCollector(None, rclient, "gunicorn").render()
    assert body == (
        b"# HELP reqs_total Requests.\n# TYPE reqs_total counter\n"
        b'reqs_total{path="/a"} 5.5\n'
        b"# HELP peak Peak.\n# TYPE peak gauge\npeak 9.0\n"
    )
    metrics = RedisMultiProcessCollector(None, rclient).collect()
    assert {(m.name, m.type) for m in metrics} == {("reqs", "counter"), ("peak", "gauge")}
    merged = RedisMultiProcessCollector.merge_from_redis(rclient, "gunicorn")
    assert sorted((s.name, s.value) for m in merged for s in m.samples) == [
        ("peak", 9.0),
        ("reqs_total", 5.5),
    ]


def test_collector_registers_with_a_registry(rclient: RedisClient) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")[K1] = 4.0
    registry = CollectorRegistry()
    RedisMultiProcessCollector(registry, rclient, "gunicorn")
    assert samples_of(generate_latest(registry)) == {("reqs_total", (("path", "/a"),)): 4.0}


# --------------------------------------------------------------------------
# cleanup_dead_worker without a multiprocess directory
# --------------------------------------------------------------------------


@pytest.fixture
def fresh_global_manager(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(manager_module, "_manager", None)
    yield
    monkeypatch.setattr(manager_module, "_manager", None)


def _two_workers(rclient: RedisClient) -> dict[str, RedisStorageDict]:
    stores = {}
    for pid in ("100", "200"):
        counter = RedisStorageDict(rclient, "gunicorn", "counter", process=f"{pid}@h")
        counter[K1] = 2.0 if pid == "100" else 3.0
        busy = RedisStorageDict(rclient, "gunicorn", "gauge", "livesum", process=f"{pid}@h")
        busy[redis_key("busy", "busy", [], [], "Busy.")] = 1.0
        peak = RedisStorageDict(rclient, "gunicorn", "gauge", "max", process=f"{pid}@h")
        peak[redis_key("peak", "peak", [], [], "Peak.")] = 50.0 if pid == "100" else 10.0
        seen = RedisStorageDict(rclient, "gunicorn", "gauge", "all", process=f"{pid}@h")
        seen[redis_key("seen", "seen", [], [], "Seen.")] = float(pid)
        stores[pid] = counter
    return stores


def test_cleanup_dead_worker_folds_in_redis(fresh_global_manager, rclient: RedisClient) -> None:
    stores = _two_workers(rclient)
    collector = RedisMultiProcessCollector(None, rclient)
    before = samples_of(collector.render())
    assert before[("busy", ())] == 2
    stores["100"].cleanup_dead_worker(100)
    after = samples_of(collector.render())
    assert after == {
        ("reqs_total", (("path", "/a"),)): 5.0,  # kept, via the archive
        ("peak", ()): 50.0,  # max kept, via the archive
        ("busy", ()): 1.0,  # the dead worker's live gauge is gone
        ("seen", (("pid", "100@h"),)): 100.0,  # `all` gauges are left to expire
        ("seen", (("pid", "200@h"),)): 200.0,
    }
    left = sorted(k.decode() for k in rclient.keys("gunicorn:*:100@h:*"))
    assert all(k.startswith("gunicorn:gauge_all:") for k in left), left
    assert rclient.keys("gunicorn:counter:archive@h:metric:*") != []
    assert rclient.keys("gunicorn:gauge_max:archive@h:metric:*") != []
    assert rclient.keys("gunicorn:gauge_livesum:archive@h:*") == []


def test_manager_cleanup_dead_worker_without_directory(
    fresh_global_manager, rclient: RedisClient
) -> None:
    from gunicorn_prometheus_exporter.backend import get_redis_storage_manager

    _two_workers(rclient)
    get_redis_storage_manager().cleanup_dead_worker(200, rclient, "gunicorn")
    after = samples_of(RedisMultiProcessCollector(None, rclient).render())
    assert after[("reqs_total", (("path", "/a"),))] == 5.0
    assert after[("busy", ())] == 1.0
    assert after[("peak", ())] == 50.0


def test_write_value_sets_the_mirrors_absolute_deadline(
    tmp_path, clean_env: pytest.MonkeyPatch, rclient: RedisClient
) -> None:
    """The storage dict writes as the mirror does: its keys expire at one
    absolute deadline (the server's clock plus the TTL, renewed every third of
    it), not a relative EXPIRE that every write pushes on."""
    from prometheus_client.mmap_dict import MmapedDict

    from gunicorn_prometheus_exporter import _native

    clean_env.setenv("REDIS_TTL_SECONDS", "60")
    values = MmapedDict(str(tmp_path / "counter_100.db"))
    values.write_value(K1, 1.0, 0.0)
    values.close()
    mirror = _native.MirrorService(
        rclient.native,
        str(tmp_path),
        "gunicorn",
        "mirrored",
        60,
        1.0,
        lambda level, message: None,
        layout="series",
    )
    assert mirror.pass_now()
    store = RedisStorageDict(rclient, "gunicorn", "counter", process="100@h")
    store.write_value(K1, 1.0)

    def deadline(process: str, data_type: str) -> int:
        return rclient.execute_command(
            "PEXPIRETIME", f"gunicorn:counter:{process}:{data_type}:{md5(K1)}"
        )

    seconds, micros = rclient.time()
    now_ms = seconds * 1000 + micros // 1000
    mirrored, written = deadline("100@mirrored", "metric"), deadline("100@h", "metric")
    assert deadline("100@mirrored", "meta") == mirrored
    assert deadline("100@h", "meta") == written
    assert abs(written - mirrored) < 1000  # written within a second of each other
    assert 59_000 <= written - now_ms <= 60_000
    time.sleep(1.1)
    store.write_value(K1, 2.0)  # within a third of the TTL: the same deadline
    assert deadline("100@h", "metric") == written
    assert deadline("100@h", "meta") == written
    mirror.stop()


def test_write_value_to_a_key_of_another_type_warns(
    store: RedisStorageDict, rclient: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A foreign key of another type where the series' key goes: the write
    is refused (and named), not raised, as before."""
    import logging

    metric = f"gunicorn:counter:100@h:metric:{md5(K1)}"
    rclient.set(metric, "foreign")
    with caplog.at_level(logging.WARNING, logger="gunicorn_prometheus_exporter"):
        store.write_value(K1, 1.0)
    assert any(metric in r.getMessage() and "WRONGTYPE" in r.getMessage() for r in caplog.records)
    assert rclient.get(metric) == b"foreign"
