"""The Redis read path with foreign or broken data under the prefix.

A valid series (written with RedisStorageDict) must always render exactly;
keys that are not of our layout, metric keys without a meta key, values
that are not numbers, series keys that are not JSON, ... are skipped, and
each one that the reader meets (its SCAN pattern is
``{prefix}:*:metric:*``) is named in a warning on the
'gunicorn_prometheus_exporter' logger.

Also: Redis unreachable (collect() logs and returns nothing, render()
raises RedisError), special float values, many series (several SCAN pages).
"""

from __future__ import annotations

import logging

import pytest

from gunicorn_prometheus_exporter.backend import (
    RedisClient,
    RedisError,
    RedisMultiProcessCollector,
    RedisStorageDict,
    redis_key,
)
from redis_server import RedisServer, free_port
from redis_support import samples_of

LOGGER = "gunicorn_prometheus_exporter"
H = "0123456789abcdef0123456789abcdef"
GOOD_BODY = b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 3.0\n"
OTHER_SERIES = '["other", "other_total", {}, "Other."]'


@pytest.fixture
def good(rclient: RedisClient) -> RedisClient:
    RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")[
        redis_key("jobs", "jobs_total", [], [], "Jobs.")
    ] = 3.0
    return rclient


def _render(client: RedisClient, caplog: pytest.LogCaptureFixture) -> tuple[bytes, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        body = RedisMultiProcessCollector(None, client).render()
    return body, [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


def _collect(client: RedisClient, caplog: pytest.LogCaptureFixture) -> tuple[dict, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        metrics = RedisMultiProcessCollector(None, client).collect()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples
    }
    return samples, [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_valid_data_renders_without_warnings(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert _render(good, caplog) == (GOOD_BODY, [])


def test_keys_outside_the_scan_pattern_are_ignored(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    good.set("gunicorn:foo", "bar")
    good.hset("gunicorn:counter:1@x:metric", "value", "1")  # no hash segment
    good.hset("gunicornx:counter:1@x:metric:" + H, "value", "1")  # another prefix
    good.set("unrelated", "1")
    body, _ = _render(good, caplog)
    assert body == GOOD_BODY


@pytest.mark.parametrize(
    "key",
    [
        "gunicorn:counter:1@x:metric:",  # empty hash
        f"gunicorn:widget:1@x:metric:{H}",  # unknown type
        f"gunicorn:gauge:1@x:metric:{H}",  # gauge without a mode
        f"gunicorn:counter:1@x:metric:{H}:extra",  # one segment too many
        f"gunicorn:counter::metric:{H}",  # empty process
    ],
)
def test_keys_not_of_the_layout_are_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    good.hset(key, mapping={"value": "1", "timestamp": "0"})
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0], warnings


def test_metric_key_without_meta_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"gunicorn:counter:1@x:metric:{H}"
    good.hset(key, mapping={"value": "1", "timestamp": "0"})
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0] and "meta" in warnings[0], warnings
    samples, warnings = _collect(good, caplog)
    assert samples == {("jobs_total", ()): 3.0}
    assert len(warnings) == 1 and key in warnings[0]


def test_meta_that_is_not_a_hash_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"gunicorn:counter:1@x:metric:{H}"
    good.hset(key, mapping={"value": "1", "timestamp": "0"})
    good.set(f"gunicorn:counter:1@x:meta:{H}", OTHER_SERIES)
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0], warnings


@pytest.mark.parametrize(
    "original_key",
    ["not json", '["x", 1]', '["x", "x_total", {"a": 1}, "X."]', '["x", "x_total", {}, "X."', ""],
)
def test_series_key_that_is_not_ours_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture, original_key: str
) -> None:
    key = f"gunicorn:counter:1@x:metric:{H}"
    good.hset(key, mapping={"value": "1", "timestamp": "0"})
    good.hset(f"gunicorn:counter:1@x:meta:{H}", "original_key", original_key)
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0], warnings


# (A timestamp is read, and so checked, for mostrecent gauges only: the merge
# of other stores does not use it.)
@pytest.mark.parametrize(
    "fields", [{"value": "abc", "timestamp": "0"}, {"value": "", "timestamp": "0"}]
)
def test_value_that_is_not_a_number_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture, fields: dict
) -> None:
    """Found failing on the 2026-11-25 build.

    the value is skipped, but the warning is lost (the reader
    writes it into a Diagnostics object it has already moved into the
    merger)."""
    key = f"gunicorn:counter:1@x:metric:{H}"
    good.hset(key, mapping=fields)
    good.hset(f"gunicorn:counter:1@x:meta:{H}", "original_key", OTHER_SERIES)
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0] and "not a number" in warnings[0], warnings


def test_metric_key_of_another_redis_type_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A string (not a hash) at a metric key: HMGET answers WRONGTYPE. It is
    skipped - but silently, as if it had been deleted since the SCAN."""
    key = f"gunicorn:counter:1@x:metric:{H}"
    good.set(key, "1")
    good.hset(f"gunicorn:counter:1@x:meta:{H}", "original_key", OTHER_SERIES)
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0], warnings


def test_gauge_with_an_unknown_mode_is_skipped_with_a_warning(
    good: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """'gauge_bogus' is no multiprocess mode; today it renders as a gauge
    with a pid label (merged like 'all')."""
    key = f"gunicorn:gauge_bogus:1@x:metric:{H}"
    good.hset(key, mapping={"value": "1", "timestamp": "0"})
    good.hset(f"gunicorn:gauge_bogus:1@x:meta:{H}", "original_key", '["x", "x", {}, "X."]')
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    assert len(warnings) == 1 and key in warnings[0], warnings


@pytest.mark.parametrize("name", ["folds", "keyset"])
def test_foreign_value_in_a_bookkeeping_key_does_not_break_the_scrape(
    good: RedisClient, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """'{prefix}:folds' (and its successor '{prefix}:keyset'), the version
    counter of the implementation, holding something that is not an integer:
    a bug with ':folds' in the build of 077afb3: every scrape fails with
    a bare C++ 'stoll' ValueError (collect() too: it only catches
    RedisError)."""
    good.set(f"gunicorn:{name}", "not a number")
    body, _ = _render(good, caplog)
    assert body == GOOD_BODY
    samples, _ = _collect(good, caplog)
    assert samples == {("jobs_total", ()): 3.0}


def test_everything_broken_at_once(good: RedisClient, caplog: pytest.LogCaptureFixture) -> None:
    broken = [
        f"gunicorn:widget:1@x:metric:{H}",
        f"gunicorn:counter:2@x:metric:{H}",
        f"gunicorn:counter:3@x:metric:{H}",
    ]
    for key in broken:
        good.hset(key, mapping={"value": "1", "timestamp": "0"})
    good.hset(f"gunicorn:counter:3@x:meta:{H}", "original_key", "[")
    good.set("gunicorn:foo", "x")
    body, warnings = _render(good, caplog)
    assert body == GOOD_BODY
    for key in broken:
        assert sum(key in w for w in warnings) == 1, (key, warnings)
    # a second scrape with the same reader warns again and renders the same
    collector = RedisMultiProcessCollector(None, good)
    assert collector.render() == collector.render() == GOOD_BODY


def test_special_values(rclient: RedisClient) -> None:
    store = RedisStorageDict(rclient, "gunicorn", "gauge", "all", process="1@h")
    for name, value in (
        ("pos", float("inf")),
        ("neg", float("-inf")),
        ("tiny", 5e-324),
        ("big", 1.7976931348623157e308),
        ("third", 1 / 3),
    ):
        store[redis_key(name, name, [], [], "S.")] = value
    nan_store = RedisStorageDict(rclient, "gunicorn", "gauge", "max", process="1@h")
    nan_store[redis_key("nan", "nan", [], [], "N.")] = float("nan")
    body = RedisMultiProcessCollector(None, rclient).render().decode()
    assert 'pos{pid="1@h"} +Inf' in body
    assert 'neg{pid="1@h"} -Inf' in body
    assert 'tiny{pid="1@h"} 5e-324' in body
    assert 'big{pid="1@h"} 1.7976931348623157e+308' in body
    assert 'third{pid="1@h"} 0.3333333333333333' in body
    assert "nan NaN" in body


def test_many_series_over_several_scan_pages(rclient: RedisClient) -> None:
    n = 3000
    commands = []
    for i in range(n):
        key = redis_key("items", "items_total", ["i"], [str(i)], "Items.")
        store = RedisStorageDict(rclient, "gunicorn", "counter", process=f"{i % 7}@h")
        commands.append(["HSET", store._key("metric", key), "value", i, "timestamp", 0])
        commands.append(
            [
                "HSET",
                store._key("meta", key),
                "original_key",
                key,
                "typ",
                "counter",
                "multiprocess_mode",
                "",
            ]
        )
    rclient.pipeline_execute(commands)
    collector = RedisMultiProcessCollector(None, rclient)
    samples = samples_of(collector.render())
    assert len(samples) == n
    assert all(samples[("items_total", (("i", str(i)),))] == i for i in range(n))
    assert collector.stats()["keys"] == n


def test_redis_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    client = RedisClient(host="127.0.0.1", port=free_port())
    collector = RedisMultiProcessCollector(None, client)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert collector.collect() == []
    assert any("Redis collector error" in r.getMessage() for r in caplog.records)
    with pytest.raises(RedisError):
        collector.render()
    with pytest.raises(RedisError):
        RedisMultiProcessCollector.merge_from_redis(client)


def test_reader_recovers_after_redis_restart(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer() as server:
        client = RedisClient(**server.client_kwargs())
        key = redis_key("jobs", "jobs_total", [], [], "Jobs.")
        RedisStorageDict(client, "gunicorn", "counter", process="1@h")[key] = 3.0
        collector = RedisMultiProcessCollector(None, client)
        assert collector.render() == GOOD_BODY
        server.stop()
        assert collector.collect() == []
        server.start()
        assert _reconnected(client)
        assert collector.render() == b""  # a restarted, empty Redis
        RedisStorageDict(client, "gunicorn", "counter", process="1@h")[key] = 3.0
        # the reader's caches (series keys by hash) must not hide new data
        assert collector.render() == GOOD_BODY


def _reconnected(client: RedisClient) -> bool:
    import time

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            return client.ping()
        except RedisError:
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------
# a long-lived reader (a sidecar) and keys that come and go
# --------------------------------------------------------------------------


def test_long_lived_reader_sees_keys_written_directly(rclient: RedisClient) -> None:
    """RedisStorageDict writes straight to Redis; a reader created before
    must see new series, and not see deleted ones."""
    collector = RedisMultiProcessCollector(None, rclient)
    assert collector.render() == b""
    store = RedisStorageDict(rclient, "gunicorn", "counter", process="1@h")
    jobs = redis_key("jobs", "jobs_total", [], [], "Jobs.")
    store[jobs] = 3.0
    assert collector.render() == GOOD_BODY
    other = redis_key("other", "other_total", [], [], "Other.")
    RedisStorageDict(rclient, "gunicorn", "counter", process="2@h")[other] = 5.0
    assert samples_of(collector.render()) == {("jobs_total", ()): 3.0, ("other_total", ()): 5.0}
    del store[jobs]
    assert samples_of(collector.render()) == {("other_total", ()): 5.0}


def _mirror_series(name: str) -> None:
    from prometheus_client import Counter

    from redis_support import setup_and_lead

    manager = setup_and_lead()
    Counter(name, "N.", registry=None).inc()
    manager._mirror.pass_now()
    manager.teardown()


def test_long_lived_reader_after_redis_lost_its_data(
    redis_srv: RedisServer, rclient: RedisClient, tmp_path
) -> None:
    """A sidecar's reader outlives a Redis restart (FLUSHALL here): what is
    written afterwards must show, even if any version counter the
    implementation keeps in Redis starts again from the same number."""
    from redis_support import in_child, manager_env

    collector = RedisMultiProcessCollector(None, rclient)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    in_child(
        _mirror_series,
        "first",
        env=manager_env(
            redis_srv, REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path / "a"
        ),
    )
    assert samples_of(collector.render()) == {("first_total", ()): 1.0}
    rclient.execute_command("FLUSHALL")
    in_child(
        _mirror_series,
        "second",
        env=manager_env(
            redis_srv, REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path / "b"
        ),
    )
    assert samples_of(collector.render()) == {("second_total", ()): 1.0}
