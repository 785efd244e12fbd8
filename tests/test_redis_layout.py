"""The seed's Redis key layout.

* ``redis_key`` returns the seed's JSON string byte for byte (and what
  prometheus_client's ``mmap_key`` gives, for any labels).
* Keys the mirror writes follow
  ``{prefix}:{type}[_{mode}]:{pid}@{instance}:{metric|meta}:{md5(series key)}``
  with hash fields value/timestamp and original_key/typ/multiprocess_mode.
* A prefix containing ':' works end to end; two prefixes share one Redis
  without seeing each other; an instance id with ':' or glob characters is
  made safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.mmap_dict import mmap_key

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector, redis_key
from gunicorn_prometheus_exporter.backend.core.dict import redis_key as redis_key_from_dict
from redis_support import (
    RedisServer,
    families_of,
    in_child,
    manager_env,
    samples_of,
    series_keys,
)

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
pytestmark = pytest.mark.usefixtures("series_layout")

SEED_KEY = (
    '["gunicorn_requests_total", "requests_total", {"method": "GET", "status": "200"}, '
    '"Total number of requests"]'
)


def test_redis_key_is_the_seeds_string() -> None:
    key = redis_key(
        metric_name="gunicorn_requests_total",
        name="requests_total",
        labelnames=["method", "status"],
        labelvalues=["GET", "200"],
        help_text="Total number of requests",
    )
    assert key == SEED_KEY
    assert redis_key_from_dict is redis_key
    assert isinstance(key, str)


def test_redis_key_sorts_labels_and_escapes_like_json() -> None:
    key = redis_key("m", "m_total", ["z", "a"], ['é"\\\n', "\u2603"], 'Help "q"\n')
    assert key == json.dumps(
        ["m", "m_total", {"z": 'é"\\\n', "a": "\u2603"}, 'Help "q"\n'], sort_keys=True
    )
    assert key == '["m", "m_total", {"a": "\\u2603", "z": "\\u00e9\\"\\\\\\n"}, "Help \\"q\\"\\n"]'
    assert redis_key("m", "m", [], [], "") == '["m", "m", {}, ""]'


text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(metric=text, name=text, labels=st.dictionaries(text, text, max_size=4), help_text=text)
def test_redis_key_equals_mmap_key(
    metric: str, name: str, labels: dict[str, str], help_text: str
) -> None:
    names, values = list(labels), list(labels.values())
    assert redis_key(metric, name, names, values, help_text) == mmap_key(
        metric, name, names, values, help_text
    )


# --------------------------------------------------------------------------
# keys written by the mirror
# --------------------------------------------------------------------------

KEY_RE = re.compile(
    r"^(?P<prefix>.+):(?P<store>counter|histogram|summary|gauge_(?:live)?(?:all|min|max|sum|mostrecent))"
    r":(?P<pid>\d+|archive)@(?P<instance>[^:@]+):(?P<data>metric|meta):(?P<hash>[0-9a-f]{32})$"
)


def _write_and_mirror(directory: str) -> dict:
    """In a child: set up, write one series of each kind, force a pass,
    return the pid and everything under the prefix."""
    from prometheus_client import Counter, Gauge, Histogram, Summary

    from gunicorn_prometheus_exporter.backend import RedisStorageManager

    manager = RedisStorageManager()
    assert manager.setup() is True
    try:
        Counter("reqs", "Requests.", ["method", "status"], registry=None).labels("GET", "200").inc(
            3
        )
        Gauge("temp", "T.", multiprocess_mode="max", registry=None).set(21.5)
        Gauge("inflight", "I.", multiprocess_mode="livesum", registry=None).inc(2)
        Gauge("seen", "S.", multiprocess_mode="all", registry=None).set(-1)
        Histogram("lat", "L.", buckets=(0.1, 1.0), registry=None).observe(0.5)
        Summary("size", "Z.", registry=None).observe(7)
        assert manager._mirror.pass_now() is True
        client = manager.get_client()
        prefix = os.environ.get("REDIS_KEY_PREFIX", "gunicorn")
        everything = sorted(k.decode() for k in client.scan_iter(match="*"))
        keys = series_keys(everything, prefix)
        return {
            "pid": os.getpid(),
            "keys": {
                k: {f.decode(): v.decode() for f, v in client.hgetall(k).items()} for k in keys
            },
            "other": [k for k in everything if not k.startswith(prefix + ":")],
            "expiretime": {k: client.execute_command("EXPIRETIME", k) for k in keys},
            "render": manager.get_collector().render(),
        }
    finally:
        manager.teardown()


def _check_layout(result: dict, prefix: str, instance: str) -> None:
    pid = str(result["pid"])
    keys = result["keys"]
    assert result["other"] == []
    stores = set()
    for key, fields in keys.items():
        m = KEY_RE.match(key)
        assert m, key
        assert m["prefix"] == prefix, key
        assert (m["pid"], m["instance"]) == (pid, instance), key
        stores.add(m["store"])
        twin = (
            key.replace(":metric:", ":meta:")
            if m["data"] == "metric"
            else key.replace(":meta:", ":metric:")
        )
        assert twin in keys, f"{key} has no {twin}"
        if m["data"] == "meta":
            assert set(fields) == {"original_key", "typ", "multiprocess_mode"}, key
            assert hashlib.md5(fields["original_key"].encode()).hexdigest() == m["hash"]
            typ = m["store"].split("_")[0]
            assert fields["typ"] == typ
            assert fields["multiprocess_mode"] == (
                m["store"].split("_", 1)[1] if typ == "gauge" else ""
            )
        else:
            assert set(fields) == {"value", "timestamp"}, key
    assert stores == {"counter", "gauge_max", "gauge_livesum", "gauge_all", "histogram", "summary"}

    def value(store: str, series_key: str) -> str:
        h = hashlib.md5(series_key.encode()).hexdigest()
        return keys[f"{prefix}:{store}:{pid}@{instance}:metric:{h}"]["value"]

    assert (
        value(
            "counter",
            SEED_KEY.replace("gunicorn_requests_total", "reqs")
            .replace("requests_total", "reqs_total")
            .replace("Total number of requests", "Requests."),
        )
        == "3"
    )
    assert value("gauge_max", redis_key("temp", "temp", [], [], "T.")) == "21.5"
    assert value("gauge_livesum", redis_key("inflight", "inflight", [], [], "I.")) == "2"
    assert value("gauge_all", redis_key("seen", "seen", [], [], "S.")) == "-1"
    assert value("histogram", redis_key("lat", "lat_bucket", ["le"], ["1.0"], "L.")) == "1"
    assert value("histogram", redis_key("lat", "lat_bucket", ["le"], ["0.1"], "L.")) == "0"
    assert value("histogram", redis_key("lat", "lat_sum", [], [], "L.")) == "0.5"
    assert value("summary", redis_key("size", "size_sum", [], [], "Z.")) == "7"
    assert value("summary", redis_key("size", "size_count", [], [], "Z.")) == "1"
    # one deadline for all keys of the instance (TTL 300 s by default)
    assert len(set(result["expiretime"].values())) == 1
    assert next(iter(result["expiretime"].values())) > 0

    samples = samples_of(result["render"])
    assert samples[("reqs_total", (("method", "GET"), ("status", "200")))] == 3
    assert samples[("temp", ())] == 21.5
    assert samples[("inflight", ())] == 2
    assert samples[("seen", (("pid", f"{pid}@{instance}"),))] == -1
    assert samples[("lat_bucket", (("le", "1.0"),))] == 1
    assert samples[("lat_count", ())] == 1
    assert samples[("size_sum", ())] == 7


def test_mirror_writes_the_seed_layout(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(redis_srv, REDIS_INSTANCE_ID="hostA", PROMETHEUS_MULTIPROC_DIR=tmp_path)
    result = in_child(_write_and_mirror, str(tmp_path), env=env)
    _check_layout(result, "gunicorn", "hostA")


def test_prefix_with_colons_end_to_end(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    env = manager_env(
        redis_srv,
        REDIS_INSTANCE_ID="hostA",
        REDIS_KEY_PREFIX="app:metrics",
        PROMETHEUS_MULTIPROC_DIR=tmp_path,
    )
    result = in_child(_write_and_mirror, str(tmp_path), env=env)
    _check_layout(result, "app:metrics", "hostA")
    # an outside reader with the same prefix sees the same
    body = RedisMultiProcessCollector(None, rclient, "app:metrics").render()
    assert families_of(body) == families_of(result["render"])
    assert RedisMultiProcessCollector(None, rclient, "gunicorn").render() == b""


def test_two_prefixes_share_one_redis(redis_srv: RedisServer, rclient: RedisClient) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ra = in_child(
            _write_and_mirror,
            a,
            env=manager_env(
                redis_srv, REDIS_INSTANCE_ID="h", REDIS_KEY_PREFIX="app", PROMETHEUS_MULTIPROC_DIR=a
            ),
        )
        rb = in_child(
            _write_and_mirror,
            b,
            env=manager_env(
                redis_srv,
                REDIS_INSTANCE_ID="h",
                REDIS_KEY_PREFIX="app:metrics",
                PROMETHEUS_MULTIPROC_DIR=b,
            ),
        )
    body_a = RedisMultiProcessCollector(None, rclient, "app").render()
    body_b = RedisMultiProcessCollector(None, rclient, "app:metrics").render()
    assert samples_of(body_a)[("reqs_total", (("method", "GET"), ("status", "200")))] == 3
    assert samples_of(body_b)[("reqs_total", (("method", "GET"), ("status", "200")))] == 3
    assert ("seen", (("pid", f"{ra['pid']}@h"),)) in samples_of(body_a)
    assert ("seen", (("pid", f"{rb['pid']}@h"),)) not in samples_of(body_a)
    assert ("seen", (("pid", f"{rb['pid']}@h"),)) in samples_of(body_b)


def test_instance_id_with_special_characters(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="pod:1 *[x]?@y", PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_write_and_mirror, str(tmp_path), env=env)
    _check_layout(result, "gunicorn", "pod_1___x___y")


def test_key_helpers() -> None:
    series = redis_key("m", "m_total", [], [], "h")
    assert _native.redis_key_for("p:q", "counter", "1@h", "metric", series) == (
        "p:q:counter:1@h:metric:" + hashlib.md5(series.encode()).hexdigest()
    )
    assert _native.redis_parse_key("p:q:gauge_max:1@h:meta:abc", "p:q") == (
        "gauge_max",
        "1@h",
        "meta",
        "abc",
    )
    assert _native.redis_parse_key("p:q:gauge_max:1@h:meta", "p:q") is None
    assert _native.redis_parse_key("other:counter:1@h:metric:abc", "p:q") is None
    assert _native.redis_format_value(0.1) == "0.1"
    assert _native.redis_format_value(float("inf")) == "inf"
    assert _native.redis_format_value(1e300) == "1e+300"
    assert float(_native.redis_format_value(2 / 3)) == 2 / 3


def test_process_id_and_glob_escape_are_callable() -> None:
    """Found failing on the 2026-11-25 build.

    both are bound with std::string_view parameters without
    nanobind's string_view caster, so every call raises TypeError - which
    breaks RedisStorageDict(client) without an explicit process, its
    __iter__/__len__/keys/values/items/clear, and cleanup_dead_worker
    without a multiprocess directory (see test_redis_storage_dict.py)."""
    assert _native.redis_process_id("1234", "hostA") == "1234@hostA"
    assert _native.redis_process_id("archive", "a:b") == "archive@a_b"
    assert _native.redis_glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_reader_stats(redis_srv: RedisServer, rclient: RedisClient, tmp_path) -> None:
    env = manager_env(redis_srv, REDIS_INSTANCE_ID="hostA", PROMETHEUS_MULTIPROC_DIR=tmp_path)
    result = in_child(_write_and_mirror, str(tmp_path), env=env)
    metric_keys = [k for k in result["keys"] if ":metric:" in k]
    collector = RedisMultiProcessCollector(None, rclient)
    first = collector.render()
    first_stats = collector.stats()
    assert families_of(collector.render()) == families_of(first) == families_of(result["render"])
    second_stats = collector.stats()
    assert first_stats["keys"] == second_stats["keys"] == len(metric_keys)
    assert first_stats["attempts"] == second_stats["attempts"] == 1
    # series keys (meta) are read once, then cached
    assert second_stats["commands"] < first_stats["commands"]
    assert second_stats["commands"] <= len(metric_keys) + 4


def test_directory_processes_are_read_by_the_core(tmp_path) -> None:
    """The processes with files in a directory, as the mirror reads the
    names (what manager.cleanup_keys archives when they are gone)."""
    for name in (
        "counter_12.db",
        "gauge_livesum_12.db",
        "gauge_all_7.db",
        "histogram_archive.db",
        "notes.txt",
        ".hidden_5.db",
        "widget_9.db",
        "gauge_3.db",
    ):
        (tmp_path / name).write_bytes(b"")
    assert _native.directory_processes(str(tmp_path)) == ["12", "7", "archive"]


def test_dead_processes_are_the_gone_pids_but_this_one(tmp_path) -> None:
    import subprocess

    from gunicorn_prometheus_exporter.backend.service.processes import dead_processes

    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    for pid in (child.pid, os.getpid(), os.getppid()):
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    (tmp_path / "counter_archive.db").write_bytes(b"")
    assert dead_processes(str(tmp_path)) == [child.pid]


def test_field_names_are_the_seeds() -> None:
    """The hash fields every writer and reader takes from layout.hpp."""
    assert (_native.REDIS_FIELD_VALUE, _native.REDIS_FIELD_TIMESTAMP) == ("value", "timestamp")
    assert (
        _native.REDIS_FIELD_ORIGINAL_KEY,
        _native.REDIS_FIELD_TYP,
        _native.REDIS_FIELD_MODE,
    ) == ("original_key", "typ", "multiprocess_mode")
    assert (_native.REDIS_METRIC, _native.REDIS_META) == ("metric", "meta")
    assert _native.redis_key_pattern("a*b", "gauge_*", "1@h", "meta") == "a\\*b:gauge_*:1@h:meta:*"
