"""Exemplars in multiprocess mode, against prometheus_client as the oracle.

The same observations, with exemplars, go into a plain single-process
prometheus_client registry and, spread over several real forked processes,
into native values in a multiprocess directory. prometheus_client keeps the
latest exemplar of each counter and bucket; our merged view must keep the
most recent across processes (and the archive of dead ones) and render it in
OpenMetrics byte for byte as prometheus_client renders the single-process
registry. The text format stays as it was (no exemplars).

Timestamps come from prometheus_client's own ``time.time()`` call, replaced
by a clock that gives each observation a known time, so that both sides hold
the same exemplars. Amounts are multiples of 1/64, so that sums are exact in
any order of addition.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as client_metrics
from prometheus_client import multiprocess as client_multiprocess
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Exemplar

import gunicorn_prometheus_exporter as exporter

METHODS = ("GET", "POST", "PUT")
# Label values with what OpenMetrics escapes (quote, backslash, newline) and
# non-ASCII text, so that escaping and UTF-8 are compared too.
ODD_VALUES = ('say "hi"', "back\\slash", "new\nline", "grüße ✓", "", "x" * 40)


@dataclass
class Op:
    process: int
    metric: str  # "counter" | "histogram" | "small" (custom buckets, no labels)
    method: str
    amount: float
    exemplar: dict[str, str] | None
    timestamp: float


def random_exemplar(rng: random.Random) -> dict[str, str] | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.7:
        return {
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
        }
    return {rng.choice(("user", "note", "a_b")): rng.choice(ODD_VALUES)}


def workload(seed: int, processes: int, ops: int) -> list[Op]:
    rng = random.Random(seed)
    start = 1_700_000_000.0 + rng.random() * 1e6
    return [
        Op(
            process=rng.randrange(processes),
            metric=rng.choice(("counter", "histogram", "small")),
            method=rng.choice(METHODS),
            amount=rng.randrange(0, 64 * 12) / 64,  # up to 12: every bucket, +Inf too
            exemplar=random_exemplar(rng),
            timestamp=start + i * 0.123456789,  # increasing: the latest is the most recent
        )
        for i in range(ops)
    ]


class FixedClock:
    """Stands in for the time module in prometheus_client.metrics."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FixedClock:
    fixed = FixedClock()
    monkeypatch.setattr(client_metrics, "time", fixed)
    return fixed


def make_metrics(registry: CollectorRegistry | None) -> dict[str, Any]:
    kw: dict[str, Any] = {} if registry is None else {"registry": registry}
    return {
        "counter": Counter("app_requests", "Requests by method", ["method"], **kw),
        "histogram": Histogram("app_latency_seconds", "Latency", ["method"], **kw),
        "small": Histogram("app_size", 'Sizes "quoted"', buckets=(0.5, 1, 4), **kw),
    }


def apply(op: Op, metrics: dict[str, Any], clock: FixedClock) -> None:
    clock.now = op.timestamp
    if op.metric == "counter":
        metrics["counter"].labels(op.method).inc(op.amount, exemplar=op.exemplar)
    elif op.metric == "histogram":
        metrics["histogram"].labels(op.method).observe(op.amount, exemplar=op.exemplar)
    else:
        metrics["small"].observe(op.amount, exemplar=op.exemplar)


def single_process(ops: list[Op], clock: FixedClock) -> CollectorRegistry:
    """The oracle: everything observed in one prometheus_client registry."""
    assert not exporter.native_values_enabled()
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    for op in ops:
        apply(op, metrics, clock)
    return registry


def run_processes(directory: Path, ops: list[Op], processes: int, clock: FixedClock) -> list[int]:
    """Each process in a forked child with native values; returns their pids."""
    pids = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: its share of the work, then out without cleanup
            status = 1
            try:
                exporter.enable_native_values(str(directory))
                metrics = make_metrics(None)
                for op in ops:
                    if op.process == index:
                        apply(op, metrics, clock)
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"process {index} failed"
        pids.append(pid)
    return pids


@pytest.fixture
def client_registry_created_off() -> Iterator[None]:
    # A single-process registry writes _created samples that multiprocess
    # mode has no way to know: compare without them.
    from prometheus_client import disable_created_metrics, enable_created_metrics

    disable_created_metrics()
    yield
    enable_created_metrics()


class WithExemplars:
    """prometheus_client's MultiProcessCollector over the directory (the
    multiprocess oracle, which reads our files and knows no exemplars), with
    the exemplars of the single-process registry put on its samples."""

    def __init__(self, directory: Path, single: CollectorRegistry) -> None:
        self.directory = directory
        self.exemplars = {
            (s.name, frozenset(s.labels.items())): s.exemplar
            for family in single.collect()
            for s in family.samples
            if s.exemplar is not None
        }

    def collect(self) -> Iterator[Any]:
        registry = CollectorRegistry()
        client_multiprocess.MultiProcessCollector(registry, path=str(self.directory))
        for family in registry.collect():
            family.samples = [
                s._replace(exemplar=self.exemplars.get((s.name, frozenset(s.labels.items()))))
                for s in family.samples
            ]
            yield family


def oracle_openmetrics(directory: Path, single: CollectorRegistry) -> bytes:
    registry = CollectorRegistry()
    registry.register(WithExemplars(directory, single))  # type: ignore[arg-type]
    return openmetrics.generate_latest(registry)


def client_text(directory: Path) -> bytes:
    registry = CollectorRegistry()
    client_multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def exemplar_lines(body: bytes) -> set[bytes]:
    return {line for line in body.splitlines() if b" # {" in line}


@pytest.mark.parametrize("seed", range(6))
def test_exemplars_match_single_process_rendering(
    tmp_path: Path, clock: FixedClock, client_registry_created_off: None, seed: int
) -> None:
    processes = 1 + seed % 4
    ops = workload(seed, processes, ops=60 + 40 * seed)
    single = single_process(ops, clock)
    run_processes(tmp_path, ops, processes, clock)

    ours = exporter.render_directory(str(tmp_path), openmetrics=True)
    assert ours == oracle_openmetrics(tmp_path, single)
    # The same exemplar lines as prometheus_client writes for one process,
    # values and all; and every line of its rendering is ours, in its order
    # of families (samples of a family come in multiprocess order).
    expected = openmetrics.generate_latest(single)
    assert exemplar_lines(ours) == exemplar_lines(expected)
    assert exemplar_lines(expected), "the workload has exemplars"
    assert sorted(ours.splitlines()) == sorted(expected.splitlines())
    # The text format has no exemplars and is what it was.
    assert exporter.render_directory(str(tmp_path)) == client_text(tmp_path)


def test_the_archive_keeps_exemplars_and_newer_ones_win(
    tmp_path: Path, clock: FixedClock, client_registry_created_off: None
) -> None:
    ops = workload(11, processes=3, ops=150)
    pids = run_processes(tmp_path, ops, 3, clock)
    single = single_process(ops, clock)
    assert exporter.render_directory(str(tmp_path), openmetrics=True) == oracle_openmetrics(
        tmp_path, single
    )

    for pid in pids[:2]:
        exporter.mark_process_dead(pid, str(tmp_path))
    names = set(os.listdir(tmp_path))
    assert "exemplars_archive.db" in names
    assert not {f"exemplars_{pid}.db" for pid in pids[:2]} & names
    # (families may come in another order: the files are others)
    assert exporter.render_directory(str(tmp_path), openmetrics=True) == oracle_openmetrics(
        tmp_path, single
    )

    # A later observation of a live process replaces the archived exemplar;
    # an older one (a clock that went back) does not.
    newer = Op(0, "small", "GET", 0.25, {"trace_id": "f" * 32}, ops[-1].timestamp + 10)
    older = Op(1, "counter", "GET", 1.0, {"trace_id": "0" * 32}, ops[0].timestamp - 10)
    run_processes(tmp_path, [newer, older], 2, clock)
    # The oracle: all of it in one registry in the order of time.
    everything = sorted([*ops, newer, older], key=lambda op: op.timestamp)
    ours = exporter.render_directory(str(tmp_path), openmetrics=True)
    assert ours == oracle_openmetrics(tmp_path, single_process(everything, clock))
    assert b'{trace_id="' + b"f" * 32 + b'"} 0.25' in ours
    assert b"0" * 32 not in ours


def test_exemplar_labels_are_limited_as_in_prometheus_client(mp_dir: Path) -> None:
    counter = Counter("limited", "Limited", ["k"], registry=None)
    histogram = Histogram("limited_h", "Limited", registry=None)
    fits = {"a" * 60: "ü" * 68}  # 128 code points, 196 bytes
    counter.labels("x").inc(exemplar=fits)
    with pytest.raises(ValueError, match="exceeding the limit of 128"):
        counter.labels("x").inc(exemplar={"a" * 60: "ü" * 69})
    with pytest.raises(ValueError, match="exceeding the limit of 128"):
        histogram.observe(1, exemplar={"t": "x" * 128})
    # The value itself: the same limit, with the number of code points.
    with pytest.raises(ValueError, match="129 UTF-8 characters"):
        counter.labels("x")._value.set_exemplar(Exemplar({"t": "x" * 128}, 1, 2.0))
    with pytest.raises(ValueError, match="Reserved"):
        counter.labels("x")._value.set_exemplar(Exemplar({"__t": "x"}, 1, 2.0))
    assert counter.labels("x")._value.get_exemplar().labels == fits
    body = exporter.render_directory(str(mp_dir), openmetrics=True)
    # (the refused increment still counted, as prometheus_client counts it)
    assert ('limited_total{k="x"} 2.0 # {' + "a" * 60 + '="' + "ü" * 68).encode() in body


def test_exemplars_that_outgrow_their_record(mp_dir: Path) -> None:
    counter = Counter("growing", "Growing", registry=None)
    for labels in ({"t": "1"}, {"t": "2" * 120}, {"t": "3"}, {"u": "4" * 100, "t": "x"}):
        counter.inc(exemplar=labels)
        assert counter._value.get_exemplar().labels == labels
        body = exporter.render_directory(str(mp_dir), openmetrics=True)
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        assert f"growing_total 4.0 # {{{rendered}}} 1.0 ".encode() in body or (
            f" # {{{rendered}}} 1.0 ".encode() in body
        )
    assert len(exemplar_lines(exporter.render_directory(str(mp_dir), openmetrics=True))) == 1


def test_no_exemplar_without_one(mp_dir: Path) -> None:
    counter = Counter("plain", "Plain", registry=None)
    counter.inc(exemplar={})  # falsy: prometheus_client stores none either
    counter.inc()
    assert counter._value.get_exemplar() is None
    assert b" # " not in exporter.render_directory(str(mp_dir), openmetrics=True)


def test_exemplar_timestamps_are_the_observation_time(mp_dir: Path) -> None:
    histogram = Histogram("timed", "Timed", buckets=(1,), registry=None)
    before = time.time()
    histogram.observe(0.5, exemplar={"trace_id": "a" * 32})
    exemplar = histogram._buckets[0].get_exemplar()
    assert exemplar.value == 0.5
    assert before <= exemplar.timestamp <= time.time()


def test_a_corrupt_exemplar_file_never_fails_a_scrape(
    mp_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter("sturdy", "Sturdy", registry=None)
    counter.inc(exemplar={"trace_id": "b" * 32})
    (mp_dir / "exemplars_999998.db").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage-here!!!")
    (mp_dir / "exemplars_999999.db").write_bytes(b"")
    body = exporter.render_directory(str(mp_dir), openmetrics=True)
    assert b'sturdy_total 1.0 # {trace_id="' + b"b" * 32 in body
    assert "exemplars_999998.db" in caplog.text and "exemplars_999999.db" in caplog.text
    # prometheus_client reads our exemplar files as empty files (an empty
    # file fails it, whatever its name).
    (mp_dir / "exemplars_999999.db").unlink()
    assert b"sturdy_total 1.0" in client_text(mp_dir)


def test_prometheus_client_reads_a_directory_with_exemplars(mp_dir: Path) -> None:
    histogram = Histogram("seen", "Seen", ["m"], registry=None)
    for i in range(50):
        histogram.labels(METHODS[i % 3]).observe(i / 8, exemplar={"trace_id": f"{i:032x}"})
    ours = exporter.render_directory(str(mp_dir))
    assert ours == client_text(mp_dir)
