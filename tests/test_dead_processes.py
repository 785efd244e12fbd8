"""mark_process_dead: live gauges removed, totals kept, files archived."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector as ClientCollector
from prometheus_client.parser import text_string_to_metric_families

import gunicorn_prometheus_exporter as exporter


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def start_worker(ready: int, metrics: dict) -> int:
    """A worker that records, reports ready, then waits to be killed."""
    pid = os.fork()
    if pid == 0:
        metrics["requests"].labels("GET").inc(3)
        metrics["latency"].observe(0.2)
        metrics["latency"].observe(4)
        metrics["size"].observe(100)
        metrics["busy"].inc()
        metrics["peak"].set(os.getpid() % 1000)
        os.write(ready, b"x")
        while True:
            time.sleep(1)
    return pid


def test_killed_worker_totals_are_kept_and_files_go(mp_dir: Path) -> None:
    metrics = {
        "requests": Counter("requests", "r", ["method"], registry=None),
        "latency": Histogram("latency", "l", registry=None),
        "size": Summary("size", "s", registry=None),
        "busy": Gauge("busy", "b", multiprocess_mode="livesum", registry=None),
        "peak": Gauge("peak", "p", multiprocess_mode="max", registry=None),
    }
    read_end, write_end = os.pipe()
    workers = [start_worker(write_end, metrics) for _ in range(3)]
    ready = b""
    while len(ready) < 3:
        ready += os.read(read_end, 3)
    before = samples(exporter.render_directory(str(mp_dir)))
    assert before[("requests_total", (("method", "GET"),))] == 9
    assert before[("busy", ())] == 3

    victim = workers.pop()
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    exporter.mark_process_dead(victim, str(mp_dir))

    names = {p.name for p in mp_dir.iterdir()}
    assert not any(name.endswith(f"_{victim}.db") for name in names), names
    assert {
        "counter_archive.db",
        "histogram_archive.db",
        "summary_archive.db",
        "gauge_max_archive.db",
    } <= names

    after = samples(exporter.render_directory(str(mp_dir)))
    for key, value in before.items():
        if key[0] == "busy":
            assert after[key] == 2  # the dead worker's live gauge is gone
        else:
            assert after[key] == value, key
    # prometheus_client's own collector reads the archive the same way.
    registry = CollectorRegistry()
    ClientCollector(registry, path=str(mp_dir))
    assert generate_latest(registry) == exporter.render_directory(str(mp_dir))

    for pid in workers:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        exporter.mark_process_dead(pid, str(mp_dir))
    final = samples(exporter.render_directory(str(mp_dir)))
    assert final[("requests_total", (("method", "GET"),))] == 9
    assert final[("latency_count", ())] == 6
    assert ("busy", ()) not in final or final[("busy", ())] == 0
    # Left: the archives, and the files of this (parent) process, which
    # created the unlabelled metrics.
    left = sorted(p.name for p in mp_dir.glob("*.db") if f"_{os.getpid()}." not in p.name)
    assert left == [
        "counter_archive.db",
        "gauge_max_archive.db",
        "histogram_archive.db",
        "summary_archive.db",
    ]


def test_directory_does_not_grow_with_restarts(mp_dir: Path) -> None:
    counter = Counter("restarts_seen", "r", registry=None)
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            counter.inc()
            os._exit(0)
        os.waitpid(pid, 0)
        exporter.mark_process_dead(pid, str(mp_dir))
    # The parent's own file (it created the metric) and one archive.
    assert sorted(p.name for p in mp_dir.glob("*.db")) == [
        f"counter_{os.getpid()}.db",
        "counter_archive.db",
    ]
    assert b"restarts_seen_total 20.0" in exporter.render_directory(str(mp_dir))
