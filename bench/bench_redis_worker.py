"""One measurement phase of bench_redis.py, for ours or for the peer.

Run by bench_redis.py as a subprocess: with the project's interpreter for
``--impl ours``, with the peer's own virtual environment for ``--impl peer``
(gunicorn-prometheus-exporter 0.2.4 has the same import name as ours, so the
two never share an interpreter). It depends only on the standard library,
prometheus_client and whichever ``gunicorn_prometheus_exporter`` the
interpreter has, and prints one JSON object on its last stdout line.

Phases (the Redis server and database come from the REDIS_* environment):

``ops``
    ns per ``Counter.labels(...).inc()`` and ``Histogram.labels(...).observe(v)``
    with Redis mode on, the child fetched once; best of R loops of N calls.
``reference``
    the scrape phase's workload in files mode with prometheus_client alone,
    merged by its own MultiProcessCollector: the expected samples.
``scrape``
    8 forked workers write the same deterministic workload of 1000 series
    each through the implementation's Redis value class; then scrapes are
    timed, the Redis commands of one scrape are counted with
    ``INFO commandstats`` (redis-cli), and the merged samples are dumped
    (pid labels removed) for the equivalence check.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

from timing import best_ns, call_loop

METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = ("200", "201", "404", "500")
HISTOGRAM_ENTRIES = 16  # 15 buckets (+Inf included) + _sum per labelset
API_OPS = ("Counter.labels(...).inc()", "Histogram.labels(...).observe(v)")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def timed_ns(run: Callable[[], object]) -> tuple[int, object]:
    """One timed call (GC off), with its result."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        result = run()
        return time.perf_counter_ns() - start, result
    finally:
        if gc_was_enabled:
            gc.enable()


def redis_cli(*args: str) -> str:
    port = os.environ["REDIS_PORT"]
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", port, *args],
        check=True,
        capture_output=True,
        text=True,
        errors="replace",  # SLOWLOG shows binary arguments (packed values)
    ).stdout


def commandstats() -> dict[str, tuple[int, int]]:
    """(calls, usec) per command since the last CONFIG RESETSTAT (server-wide;
    usec is the server's execution time, without I/O and parsing)."""
    stats = {}
    for line in redis_cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_") :].split(":", 1)
            values = dict(f.split("=", 1) for f in fields.split(","))
            stats[name] = (int(values["calls"]), int(values["usec"]))
    return stats


# The counting's own commands (redis-cli's CONFIG RESETSTAT and INFO).
_OWN_COMMANDS = {"config|resetstat", "info"}


def count_commands(run: Callable[[], object]) -> tuple[dict[str, list[int]], object]:
    """Redis commands sent while ``run`` runs (nothing else talks to this
    server meanwhile): [calls, server usec] by command, minus what counting
    alone shows; and what ``run`` returned."""

    def measured(inner: Callable[[], object]) -> tuple[dict[str, tuple[int, int]], object]:
        redis_cli("CONFIG", "RESETSTAT")
        result = inner()
        return {k: v for k, v in commandstats().items() if k not in _OWN_COMMANDS}, result

    baseline, _ = measured(lambda: None)
    stats, result = measured(run)
    out = {}
    for name, (calls, usec) in sorted(stats.items()):
        base_calls, base_usec = baseline.get(name, (0, 0))
        if calls - base_calls:
            out[name] = [calls - base_calls, max(0, usec - base_usec)]
    return out, result


def strip_pid(metrics: object) -> list[list[object]]:
    """Merged samples as sortable rows, without pid labels."""
    rows = []
    for family in metrics:
        for s in family.samples:
            labels = sorted((k, v) for k, v in s.labels.items() if k != "pid")
            rows.append([family.name, family.type, s.name, labels, s.value])
    rows.sort(key=lambda r: json.dumps(r[:4]) + repr(r[4]))
    return rows


def impl_info(impl: str) -> dict[str, object]:
    import gunicorn_prometheus_exporter as gpe

    return {
        "impl": impl,
        "version": version("gunicorn-prometheus-exporter"),
        "module": os.path.dirname(gpe.__file__),
        "prometheus_client": version("prometheus_client"),
        "python": sys.version.split()[0],
    }


# --------------------------------------------------------------------------
# Redis mode on, for each implementation
# --------------------------------------------------------------------------


def setup_redis_mode(impl: str) -> object:
    """Switch prometheus_client's values to the implementation's Redis mode;
    returns the storage manager."""
    from gunicorn_prometheus_exporter.backend import get_redis_storage_manager

    manager = get_redis_storage_manager()
    if not manager.setup():
        raise RuntimeError(f"{impl}: Redis storage manager setup() returned False")
    from prometheus_client import values

    name = values.ValueClass.__name__
    if (impl == "ours" and name != "NativeValue") or (impl == "peer" and "Redis" not in name):
        raise RuntimeError(f"{impl}: unexpected value class {values.ValueClass!r} after setup")
    return manager


def make_collector(impl: str, manager: object) -> object:
    prefix = os.environ["REDIS_KEY_PREFIX"]
    if impl == "ours":
        from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector

        client = RedisClient(
            host="127.0.0.1", port=int(os.environ["REDIS_PORT"]), db=int(os.environ["REDIS_DB"])
        )
        return RedisMultiProcessCollector(None, client, prefix)
    from gunicorn_prometheus_exporter.backend import RedisMultiProcessCollector

    # The peer's own client, as its manager made it (redis.from_url, its options).
    return RedisMultiProcessCollector(None, manager.get_client(), prefix)


# --------------------------------------------------------------------------
# Phase: ops
# --------------------------------------------------------------------------


def phase_ops(impl: str, args: argparse.Namespace) -> dict[str, object]:
    setup_redis_mode(impl)
    from prometheus_client import Counter, Histogram

    counter = Counter("bench_requests", "Requests.", ["method", "route"], registry=None)
    histogram = Histogram("bench_latency_seconds", "Latency.", ["route"], registry=None)
    ops = {
        API_OPS[0]: call_loop(counter.labels("GET", "/api/items").inc, None, args.ops),
        API_OPS[1]: call_loop(histogram.labels("/api/items").observe, 0.3, args.ops),
    }
    for run in ops.values():
        run()  # warm up
    best = dict.fromkeys(ops, float(sys.maxsize))
    for _ in range(args.repeats):  # interleaved
        for name, run in ops.items():
            best[name] = min(best[name], best_ns(run, 1) / args.ops)

    def empty_loop() -> None:
        for _ in range(args.ops):
            pass

    loop_ns = best_ns(empty_loop, args.repeats) / args.ops
    # A check that the values really count (not timed).
    expected = args.ops * (args.repeats + 1)
    got = counter.labels("GET", "/api/items")._value.get()
    result = {
        **impl_info(impl),
        "ns": best,
        "loop_ns": loop_ns,
        "ops": args.ops,
        "repeats": args.repeats,
        "counter_value_ok": got == expected,
    }
    if impl == "peer":
        # Redis commands the call itself sends (ours sends none: its mirror
        # thread does, once per REDIS_FLUSH_INTERVAL, so it is not counted).
        calls = 20
        result["commands_per_call"] = {
            name: count_commands(call_loop(method, arg, calls))[0]
            for name, method, arg in (
                (API_OPS[0], counter.labels("GET", "/api/items").inc, None),
                (API_OPS[1], histogram.labels("/api/items").observe, 0.3),
            )
        }
        result["commands_calls"] = calls
    return result


# --------------------------------------------------------------------------
# Phase: scrape
# --------------------------------------------------------------------------


def series_mix(total: int) -> tuple[int, int, int]:
    """(counters, histogram labelsets, 'all' gauges) making ``total`` stored
    values per process: 40% counters, 40% histogram (15 buckets + _sum per
    labelset), the rest gauges.

    Gauges are ``multiprocess_mode="all"`` only: gunicorn-prometheus-exporter
    0.2.4 merges no other mode correctly (a ``livesum`` gauge gets a stray
    ``{prefix}:gauge:{pid}`` key at 0 besides its ``gauge_livesum`` one, and
    its collector types ``gauge_livesum`` keys as counters, so the merge
    depends on which key it scans first: we saw per-pid zeros and the last
    value instead of the sum), so with other modes the two would neither
    agree nor do the same work."""
    counters = total * 4 // 10
    histogram_labelsets = max(1, total * 4 // 10 // HISTOGRAM_ENTRIES)
    gauges_all = total - counters - histogram_labelsets * HISTOGRAM_ENTRIES
    return counters, histogram_labelsets, gauges_all


def write_worker_metrics(worker: int, total: int) -> None:
    """In a forked worker: the same deterministic updates for either
    implementation, through prometheus_client's API."""
    from prometheus_client import Counter, Gauge, Histogram

    counters, histogram_labelsets, gauges_all = series_mix(total)
    rng = random.Random(worker)
    requests = Counter(
        "app_requests", "HTTP requests.", ["method", "route", "status"], registry=None
    )
    latency = Histogram(
        "app_request_duration_seconds", "Latency.", ["method", "route"], registry=None
    )
    memory = Gauge(
        "app_worker_cache_bytes", "Cache size.", ["cache"], registry=None, multiprocess_mode="all"
    )
    for i in range(counters):
        requests.labels(METHODS[i % 4], f"/api/v1/r{i // 16}", STATUSES[i // 4 % 4]).inc(
            rng.randint(1, 500)
        )
    for i in range(histogram_labelsets):
        child = latency.labels(METHODS[i % 4], f"/api/v1/r{i // 4}")
        for _ in range(3):
            child.observe(rng.expovariate(8.0))
    for i in range(gauges_all):
        memory.labels(f"cache{i}").set(rng.random() * 1e6)


def populate(impl: str, manager: object, processes: int, series: int) -> float:
    """Fork the workers; each writes its series and reports ready, then waits
    to be released, so every worker is alive when ours mirrors the directory
    (the peer's writes went to Redis already). Returns seconds taken."""
    start = time.perf_counter()
    if impl == "ours" and not manager._mirror.pass_now():
        # Take the mirror lock before forking, or a worker's standby mirror
        # may win it and the parent's pass_now() below would do nothing.
        raise RuntimeError("ours: this process's mirror is not the leader")
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pids = []
    for worker in range(processes):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                os.close(ready_r)
                os.close(release_w)
                write_worker_metrics(worker, series)
                os.write(ready_w, b"1")
                os.close(ready_w)  # EOF for the parent once all wrote or died
                os.read(release_r, 1)  # until released (or the parent died)
            except BaseException as exc:
                print(f"worker {worker} failed: {exc!r}", file=sys.stderr)
                status = 1
            finally:
                os._exit(status)
        pids.append(pid)
    os.close(ready_w)
    os.close(release_r)
    ready = 0
    while ready < processes:
        chunk = os.read(ready_r, processes)
        if not chunk:
            break  # a worker failed before reporting ready
        ready += len(chunk)
    os.close(ready_r)
    # One pass of this (the leading) mirror sends the whole directory,
    # workers alive. The mirror stays up but idle (REDIS_FLUSH_INTERVAL
    # is an hour here), so nothing but the scrapes talks to Redis next.
    if impl == "ours" and ready == processes and not manager._mirror.pass_now():
        raise RuntimeError("ours: the mirror pass did not run (not the leader)")
    os.close(release_w)  # release the workers: each reads EOF and exits
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    if failed or ready != processes:
        raise RuntimeError(f"{failed} of {processes} workers failed")
    return time.perf_counter() - start


def phase_scrape(impl: str, args: argparse.Namespace) -> dict[str, object]:
    from prometheus_client import CollectorRegistry, generate_latest

    manager = setup_redis_mode(impl)
    populate_s = populate(impl, manager, args.processes, args.series)

    collector = make_collector(impl, manager)
    registry = CollectorRegistry()
    registry.register(collector)  # no describe(): registering does not scrape

    result: dict[str, object] = {**impl_info(impl), "populate_s": populate_s}
    timings: dict[str, list[int]] = {}

    def record(name: str, run: Callable[[], object]) -> object:
        ns, out = timed_ns(run)
        timings.setdefault(name, []).append(ns)
        return out

    if impl == "ours":
        # Cold: a fresh client + collector (connect included), first scrape.
        def cold() -> bytes:
            return make_collector(impl, manager).render()

        collector.render()  # steady state: the later scrapes of one collector
        collector.render()
        body = collector.render()
        start = time.perf_counter()
        rounds = 0
        while rounds < args.rounds or time.perf_counter() - start < args.budget_s:
            record("ours_render", collector.render)
            record("ours_collect_generate_latest", lambda: generate_latest(registry))
            record("ours_cold_render", cold)
            rounds += 1
        cold_collector = make_collector(impl, manager)
        result["cold_commands"], _ = count_commands(cold_collector.render)
        result["cold_stats"] = cold_collector.stats()
        result["commands"], _ = count_commands(collector.render)
        result["stats"] = collector.stats()
        result["rounds"] = rounds
        samples_source = collector.collect()
    else:
        body = b""
        for _ in range(args.rounds):
            body = record("peer_collect_generate_latest", lambda: generate_latest(registry))
        # The commands of one scrape; its result gives the samples.
        result["commands"], samples_source = count_commands(collector.collect)
        result["rounds"] = args.rounds
    result["ms"] = {name: min(ns) / 1e6 for name, ns in timings.items()}
    result["all_ms"] = {name: [round(n / 1e6, 2) for n in ns] for name, ns in timings.items()}
    result["output_lines"] = body.count(b"\n")
    result["samples"] = strip_pid(samples_source)
    return result


# --------------------------------------------------------------------------


def phase_reference(_impl: str, args: argparse.Namespace) -> dict[str, object]:
    """prometheus_client alone, files mode: the same workload written by
    forked workers through MultiProcessValue, merged by its
    MultiProcessCollector. The expected samples (this phase never imports
    gunicorn_prometheus_exporter)."""
    import shutil
    import tempfile

    from prometheus_client import values
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = tempfile.mkdtemp(prefix="gpe-bench-reference-")
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        values.ValueClass = values.MultiProcessValue()
        for worker in range(args.processes):
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                status = 0
                try:
                    write_worker_metrics(worker, args.series)
                    values.close_all_multiprocess_files()
                except BaseException as exc:
                    print(f"worker {worker} failed: {exc!r}", file=sys.stderr)
                    status = 1
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"reference worker {worker} failed")
        samples = strip_pid(MultiProcessCollector(None, path=directory).collect())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "impl": "prometheus_client",
        "prometheus_client": version("prometheus_client"),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("ops", "scrape", "reference"))
    parser.add_argument("--impl", choices=("ours", "peer", "prometheus_client"), required=True)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=0.0)
    args = parser.parse_args()
    phase = {"ops": phase_ops, "scrape": phase_scrape, "reference": phase_reference}[args.phase]
    out = phase(args.impl, args)
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
