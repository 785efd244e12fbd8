"""Differential: the Redis view against the multiprocess directory.

One workload - several forked worker processes; counters, gauges in all ten
multiprocess modes, histograms (default and custom buckets) and summaries;
label values and help texts with Unicode, quotes, backslashes and newlines -
runs under a master that set up Redis storage with PROMETHEUS_MULTIPROC_DIR
pointing at a test directory. Afterwards the same data is rendered

* from Redis, by RedisMultiProcessCollector.render() (text and OpenMetrics)
  and .collect(),
* from the directory, by our render_directory(), and
* from the directory, by prometheus_client's own MultiProcessCollector,

and must be identical after normalising: the Redis view names processes
'pid@instance' (the instance is stripped) and may order samples and
families differently (each family's lines are compared as a set).

Values are chosen so that every sum is exact (multiples of powers of two,
small): the Redis reader adds processes in another order than a directory
listing gives, and float addition is not associative, so sums of values
like 0.003 may differ in the last digit between the views (as they do
between two directory listings for prometheus_client itself).

Also after a worker was killed and folded into the archive, with random
workloads (seeded), and with a key prefix containing ':'.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector as PcCollector
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

import gunicorn_prometheus_exporter as gpe
from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector
from redis_support import (
    RedisServer,
    families_of,
    in_child,
    manager_env,
    normalise_pids,
    setup_and_lead,
)

# prometheus_client's own list (the oracle), in a fixed order.
GAUGE_MODES = tuple(sorted(Gauge._MULTIPROC_MODES))
LABEL_VALUES = (
    "plain",
    "é ☃ 日本",
    'say "hi"',
    "back\\slash",
    "new\nline",
    "",
    "tab\there",
    'a\\"b\\n',
)


def _make_metrics() -> dict:
    from prometheus_client import Counter, Gauge, Histogram, Summary

    m = {
        "requests": Counter(
            "requests",
            'Requests with "quotes", \\ and\nnewline.',
            ["method", "path"],
            registry=None,
        ),
        "plain": Counter("plain_events", "Plain.", registry=None),
        "latency": Histogram("latency_seconds", "Latency ☃.", ["route"], registry=None),
        "sizes": Histogram(
            "sizes", "Sizes.", buckets=(0.5, 1, 2.5, 100, float("inf")), registry=None
        ),
        "payload": Summary("payload_bytes", "Payload.", ["kind"], registry=None),
    }
    for mode in GAUGE_MODES:
        m[mode] = Gauge(
            f"gauge_{mode}", f"Gauge {mode}.", ["slot"], multiprocess_mode=mode, registry=None
        )
    return m


def _fixed_work(index: int) -> None:
    m = _make_metrics()
    for j, value in enumerate(LABEL_VALUES):
        m["requests"].labels("GET", value).inc(index + j + 0.25)
        if (index + j) % 2:
            m["requests"].labels("POST", value).inc(2**-10)
    m["plain"].inc(index)
    for k in range(5 + index):
        m["latency"].labels(LABEL_VALUES[k % len(LABEL_VALUES)]).observe(2**-9 * k * (index + 1))
        m["sizes"].observe(k * 0.625)
    m["payload"].labels("json").observe(100 * index + 1)
    m["payload"].labels("x\ny").observe(0.125)
    for n, mode in enumerate(GAUGE_MODES):
        m[mode].labels("a").set(index * 10 - n)
        if mode.endswith("mostrecent"):
            m[mode].labels(LABEL_VALUES[index % len(LABEL_VALUES)]).set(index + 0.5)
            time.sleep(0.002)  # distinct timestamps
            m[mode].labels("a").set(1000 + index)
        else:
            m[mode].labels(LABEL_VALUES[index % len(LABEL_VALUES)]).inc(index + 0.5)


def _random_work(seed: int) -> Callable[[int], None]:
    def work(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        m = _make_metrics()
        for _ in range(rng.randint(5, 60)):
            kind = rng.choice(list(m))
            label = rng.choice(LABEL_VALUES)
            value = rng.choice([0, 1, 2.5, 2**-20, 123456.75, rng.randint(0, 10**6) / 1024])
            metric = m[kind]
            if kind == "requests":
                metric.labels(rng.choice(["GET", "PUT"]), label).inc(value)
            elif kind == "plain":
                metric.inc(value)
            elif kind in ("latency", "payload"):
                metric.labels(label).observe(value * rng.choice([1, -1]))
            elif kind == "sizes":
                metric.observe(value)
            else:
                op = "set" if "mostrecent" in kind else rng.choice(["set", "inc", "dec"])
                getattr(metric.labels(label), op)(value)
                if "mostrecent" in kind:
                    time.sleep(0.001)

    return work


def _run_workload(work: Callable[[int], None], workers: int, kill_one: bool) -> dict:
    """In the master (a child of pytest): workers record and exit (one is
    killed with SIGKILL and folded if `kill_one`); then a pass."""
    manager = setup_and_lead()
    master = os.getpid()
    pids = []
    ready_r, ready_w = os.pipe()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                try:
                    work(index)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    raise
                status = 0
                if kill_one and index == workers - 1:
                    os.write(ready_w, b"r")
                    while os.getppid() == master:  # until killed, or the master is gone
                        time.sleep(0.05)
            finally:
                os._exit(status)
        pids.append(pid)
    for pid in pids[:-1] if kill_one else pids:
        assert os.waitpid(pid, 0)[1] == 0
    if kill_one:
        os.read(ready_r, 1)
        os.kill(pids[-1], signal.SIGKILL)
        os.waitpid(pids[-1], 0)
        manager.cleanup_dead_worker(pids[-1])
    assert manager._mirror.pass_now() is True
    collector = manager.get_collector()
    out = {
        "text": collector.render(),
        "openmetrics": collector.render(openmetrics=True),
        "collect": _collected(collector.collect()),
        "pids": pids,
    }
    manager.teardown()
    return out


def _collected(metrics) -> dict:
    out = {}
    for metric in metrics:
        out[metric.name] = (
            metric.type,
            metric.documentation,
            sorted(
                (s.name, tuple(sorted(s.labels.items())), repr(s.value)) for s in metric.samples
            ),
        )
    return out


def _blocks(body: str) -> dict[str, tuple[list[str], list[str]]]:
    """Exposition -> {family: (its comment lines, its sample lines sorted)}."""
    blocks: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in body.split("\n"):
        if not line or line == "# EOF":
            continue
        if line.startswith("# HELP "):
            current = line.split(" ", 3)[2]
            assert current not in blocks, f"family {current} twice"
            blocks[current] = ([line], [])
        elif line.startswith("#"):
            blocks[current][0].append(line)
        else:
            blocks[current][1].append(line)
    return {name: (comments, sorted(samples)) for name, (comments, samples) in blocks.items()}


def _pc_views(directory: str) -> tuple[bytes, bytes, dict]:
    registry = CollectorRegistry()
    collector = PcCollector(registry, path=directory)
    return generate_latest(registry), om_generate_latest(registry), _collected(collector.collect())


def _diff(a: dict, b: dict) -> str:
    """The families of two parsed/split expositions that differ, readably."""
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            left, right = a.get(name), b.get(name)
            if left is None or right is None:
                out.append(f"{name}: only in {'second' if left is None else 'first'}")
                continue
            lines_a = set(map(repr, left[-1]))
            lines_b = set(map(repr, right[-1]))
            out.append(
                f"{name}: first only {sorted(lines_a - lines_b)}; "
                f"second only {sorted(lines_b - lines_a)}; headers {left[:-1]} {right[:-1]}"
            )
    return "\n".join(out)


def _assert_same(result: dict, directory: str, instance: str) -> None:
    redis_text = normalise_pids(result["text"].decode())
    redis_om = normalise_pids(result["openmetrics"].decode())
    assert f'@{instance}"' in result["text"].decode()  # there are pid labels to normalise

    ours = gpe.render_directory(directory).decode()
    ours_om = gpe.render_directory(directory, openmetrics=True).decode()
    pc_text, pc_om, pc_collect = _pc_views(directory)

    # parsed, per family, samples sorted
    assert families_of(redis_text) == families_of(ours), _diff(
        families_of(redis_text), families_of(ours)
    )
    assert families_of(ours) == families_of(pc_text.decode()), _diff(
        families_of(ours), families_of(pc_text.decode())
    )
    # line by line (value formatting, escaping), per family
    assert _blocks(redis_text) == _blocks(ours), _diff(_blocks(redis_text), _blocks(ours))
    assert _blocks(ours) == _blocks(pc_text.decode()), _diff(
        _blocks(ours), _blocks(pc_text.decode())
    )
    assert _blocks(redis_om) == _blocks(ours_om), _diff(_blocks(redis_om), _blocks(ours_om))
    assert _blocks(ours_om) == _blocks(pc_om.decode()), _diff(
        _blocks(ours_om), _blocks(pc_om.decode())
    )
    assert redis_om.endswith("# EOF\n")
    # collect(): Metric objects
    redis_collect = {
        name: (
            typ,
            doc,
            sorted(
                (
                    s,
                    tuple(
                        (k, normalise_pids(f'pid="{v}"')[5:-1] if k == "pid" else v)
                        for k, v in labels
                    ),
                    value,
                )
                for s, labels, value in samples
            ),
        )
        for name, (typ, doc, samples) in result["collect"].items()
    }
    assert redis_collect == pc_collect, _diff(redis_collect, pc_collect)


def test_fixed_workload(redis_srv: RedisServer, rclient: RedisClient, tmp_path) -> None:
    env = manager_env(
        redis_srv,
        REDIS_INSTANCE_ID="node-1",
        REDIS_FLUSH_INTERVAL=60,
        PROMETHEUS_MULTIPROC_DIR=tmp_path,
    )
    result = in_child(_run_workload, _fixed_work, 4, False, env=env)
    _assert_same(result, str(tmp_path), "node-1")
    # an outside reader (another host, a sidecar) renders the same (the
    # order of samples within a family may differ between two readers)
    outside = RedisMultiProcessCollector(None, rclient).render().decode()
    assert _blocks(outside) == _blocks(result["text"].decode())
    # spot checks of exact values
    families = families_of(normalise_pids(result["text"].decode()))
    plain = dict(((s, labels), v) for s, labels, v in families["plain_events"][2])
    assert plain[("plain_events_total", ())] == repr(0.0 + 1 + 2 + 3)
    gmax = dict(((s, labels), v) for s, labels, v in families["gauge_max"][2])
    assert gmax[("gauge_max", (("slot", "a"),))] == repr(30.0 - GAUGE_MODES.index("max"))
    recent = dict(((s, labels), v) for s, labels, v in families["gauge_mostrecent"][2])
    # workers run concurrently: one of their last values (the views agree on which)
    assert recent[("gauge_mostrecent", (("slot", "a"),))] in {repr(1000.0 + i) for i in range(4)}


def test_fixed_workload_after_a_fold(redis_srv: RedisServer, tmp_path) -> None:
    env = manager_env(
        redis_srv,
        REDIS_INSTANCE_ID="node-1",
        REDIS_FLUSH_INTERVAL=60,
        PROMETHEUS_MULTIPROC_DIR=tmp_path,
    )
    result = in_child(_run_workload, _fixed_work, 4, True, env=env)
    assert any(name.endswith("_archive.db") for name in os.listdir(tmp_path))
    _assert_same(result, str(tmp_path), "node-1")


def test_prefix_with_colons(redis_srv: RedisServer, rclient: RedisClient, tmp_path) -> None:
    env = manager_env(
        redis_srv,
        REDIS_INSTANCE_ID="node-1",
        REDIS_FLUSH_INTERVAL=60,
        REDIS_KEY_PREFIX="team:app:metrics",
        PROMETHEUS_MULTIPROC_DIR=tmp_path,
    )
    result = in_child(_run_workload, _fixed_work, 2, False, env=env)
    _assert_same(result, str(tmp_path), "node-1")
    assert rclient.keys("gunicorn:*") == []
    outside = RedisMultiProcessCollector(None, rclient, "team:app:metrics").render().decode()
    assert _blocks(outside) == _blocks(result["text"].decode())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workloads(redis_srv: RedisServer, tmp_path, seed: int) -> None:
    env = manager_env(
        redis_srv, REDIS_INSTANCE_ID="h", REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path
    )
    result = in_child(_run_workload, _random_work(seed), 3, seed == 3, env=env)
    _assert_same(result, str(tmp_path), "h")
