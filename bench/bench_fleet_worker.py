"""One measurement phase of bench_fleet.py, run as a subprocess.

Phases (the Redis server, database, key prefix and instance come from the
REDIS_* environment and PROMETHEUS_MULTIPROC_DIR; one JSON object is printed
on the last stdout line):

``instance``
    one instance of the fleet: W forked workers write S series each through
    our native values into the instance's own directory, and one pass of the
    instance's mirror sends them to Redis (bench_redis_worker.populate).
``scrape``
    ms per ``RedisMultiProcessCollector.render()`` over the whole prefix,
    steady (one collector scraped repeatedly) and cold (new client +
    collector, connect included), the Redis commands of one of each, and
    ``render_directory`` of one instance's directory (file mode).
``load``
    one instance's W workers keep serving requests (a counter and a
    histogram per request) with the mirror on; the mirror's commands are
    counted server-side over a few seconds.
``pytheus``
    (pytheus's own virtual environment) W forked workers write the same
    series through pytheus with its Redis backend, pure-Python or
    pytheus-backend-rs; then ms per ``generate_metrics()``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable

from bench_redis_worker import (
    METHODS,
    STATUSES,
    commandstats,
    count_commands,
    redis_cli,
    series_mix,
    timed_ns,
)

# prometheus_client's default buckets, given to pytheus too (its own differ).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def timed_rounds(run: object, rounds: int, budget_s: float) -> tuple[float, int]:
    """(best ms, rounds) of ``run`` over at least ``rounds`` calls and
    ``budget_s`` seconds; the first two calls are warm-up, not timed."""
    run()  # type: ignore[operator]
    run()  # type: ignore[operator]
    best, done, start = float("inf"), 0, time.perf_counter()
    while done < rounds or time.perf_counter() - start < budget_s:
        ns, _ = timed_ns(run)  # type: ignore[arg-type]
        best = min(best, ns / 1e6)
        done += 1
    return best, done


def fork_workers(count: int, body: Callable[[int], None]) -> list[int]:
    """Fork ``count`` workers, each running ``body(worker)`` then exiting."""
    pids = []
    for worker in range(count):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(child_status(body, worker))
        pids.append(pid)
    return pids


def child_status(body: Callable[[int], None], worker: int) -> int:
    """0, or 1 (reported on stderr) if ``body(worker)`` raised."""
    try:
        body(worker)
    except BaseException as exc:
        print(f"worker {worker} failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


def reap(pids: list[int]) -> int:
    """Wait for the workers; how many failed (a signal's end is said on stderr)."""
    failed = 0
    for pid in pids:
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code < 0:
            print(f"worker {pid} failed: killed by signal {-code}", file=sys.stderr)
        failed += code != 0
    return failed


# --------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------


def phase_instance(args: argparse.Namespace) -> dict[str, object]:
    from bench_redis_worker import populate, setup_redis_mode

    manager = setup_redis_mode("ours")
    return {"populate_s": populate("ours", manager, args.processes, args.series)}


def make_collector() -> object:
    from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector

    # From the REDIS_* settings, as an exporter's scrape (reply limit, timeouts).
    return RedisMultiProcessCollector(
        None, RedisClient.from_config(), os.environ["REDIS_KEY_PREFIX"]
    )


def phase_scrape(args: argparse.Namespace) -> dict[str, object]:
    from gunicorn_prometheus_exporter import render_directory

    collector = make_collector()
    steady_ms, steady_rounds = timed_rounds(collector.render, args.rounds, args.budget_s)
    cold_ms, cold_rounds = timed_rounds(
        lambda: make_collector().render(), args.rounds, args.budget_s
    )
    files_ms, _ = timed_rounds(lambda: render_directory(args.directory), args.rounds, 1.0)
    steady_commands, body = count_commands(collector.render)
    steady_stats = collector.stats()
    cold_collector = make_collector()
    cold_commands, _ = count_commands(cold_collector.render)
    return {
        "steady_ms": steady_ms,
        "steady_rounds": steady_rounds,
        "cold_ms": cold_ms,
        "cold_rounds": cold_rounds,
        "files_ms": files_ms,
        "files_lines": render_directory(args.directory).count(b"\n"),
        "lines": body.count(b"\n"),  # type: ignore[attr-defined]
        "steady_commands": steady_commands,
        "steady_stats": steady_stats,
        "cold_commands": cold_commands,
        "cold_stats": cold_collector.stats(),
    }


def serve_requests(worker: int, seconds: float, rate: float) -> None:
    """In a forked worker: ``rate`` requests a second for ``seconds``, each
    counting one request and observing its latency (series of the mix)."""
    from prometheus_client import Counter, Histogram

    counters, histogram_labelsets, _ = series_mix(1000)
    requests = Counter(
        "app_requests", "HTTP requests.", ["method", "route", "status"], registry=None
    )
    latency = Histogram(
        "app_request_duration_seconds", "Latency.", ["method", "route"], registry=None
    )
    rng = random.Random(worker)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        c, h = i % counters, i % histogram_labelsets
        requests.labels(METHODS[c % 4], f"/api/v1/r{c // 16}", STATUSES[c // 4 % 4]).inc()
        latency.labels(METHODS[h % 4], f"/api/v1/r{h // 4}").observe(rng.expovariate(8.0))
        i += 1
        time.sleep(1.0 / rate)


def phase_load(args: argparse.Namespace) -> dict[str, object]:
    from bench_redis_worker import setup_redis_mode, write_worker_metrics

    manager = setup_redis_mode("ours")
    if not manager._mirror.pass_now():  # lead before forking (see populate)
        raise RuntimeError("this process's mirror is not the leader")

    def serve(worker: int) -> None:
        write_worker_metrics(worker, args.series)  # the instance's series
        serve_requests(worker, args.seconds + 3.0, args.rate)

    pids = fork_workers(args.processes, serve)
    time.sleep(2.0)  # the workers wrote their series, a pass sent them: steady now
    redis_cli("CONFIG", "RESETSTAT")
    start = time.perf_counter()
    time.sleep(args.seconds)
    stats = commandstats()
    elapsed = time.perf_counter() - start
    failed = reap(pids)
    if failed:
        raise RuntimeError(f"{failed} of {args.processes} load workers failed")
    commands = {k: v for k, v in stats.items() if k not in ("config|resetstat", "info")}
    return {"seconds": elapsed, "commands": commands}


# --------------------------------------------------------------------------
# pytheus
# --------------------------------------------------------------------------


def load_pytheus(backend: str) -> None:
    from pytheus.backends import load_backend

    config = {"host": "127.0.0.1", "port": int(os.environ["REDIS_PORT"])}
    if backend == "rs":
        from pytheus_backend_rs import RedisBackend

        load_backend(backend_class=RedisBackend, backend_config=config)
    else:
        from pytheus.backends.redis import MultiProcessRedisBackend

        load_backend(backend_class=MultiProcessRedisBackend, backend_config=config)


def pytheus_metrics() -> tuple[object, object, object, object]:
    """The mix's three families (as bench_redis_worker.write_worker_metrics)
    and a per-worker 'written' gauge, in pytheus's default registry."""
    from pytheus.metrics import Counter, Gauge, Histogram

    requests = Counter(
        "app_requests", "HTTP requests.", required_labels=["method", "route", "status"]
    )
    latency = Histogram(
        "app_request_duration_seconds",
        "Latency.",
        required_labels=["method", "route"],
        buckets=list(BUCKETS),
    )
    memory = Gauge("app_worker_cache_bytes", "Cache size.", required_labels=["cache"])
    written = Gauge("bench_worker_written", "Set once a worker wrote.", required_labels=["worker"])
    return requests, latency, memory, written


def pytheus_write(worker: int, total: int) -> None:
    """In a forked worker: the mix's updates, through pytheus's API."""
    requests, latency, memory, written = pytheus_metrics()
    counters, histogram_labelsets, gauges_all = series_mix(total)
    rng = random.Random(worker)
    for i in range(counters):
        labels = {"method": METHODS[i % 4], "route": f"/api/v1/r{i // 16}"}
        requests.labels({**labels, "status": STATUSES[i // 4 % 4]}).inc(rng.randint(1, 500))
    for i in range(histogram_labelsets):
        child = latency.labels({"method": METHODS[i % 4], "route": f"/api/v1/r{i // 4}"})
        for _ in range(3):
            child.observe(rng.expovariate(8.0))
    for i in range(gauges_all):
        memory.labels({"cache": f"cache{i}"}).set(rng.random() * 1e6)
    written.labels({"worker": str(worker)}).set(1)  # last: its writes precede it


def phase_pytheus(args: argparse.Namespace) -> dict[str, object]:
    from pytheus.exposition import generate_metrics

    redis_cli("FLUSHALL")
    start = time.perf_counter()

    def write(worker: int) -> None:
        load_pytheus(args.backend)  # in the child: the Rust backend's threads
        pytheus_write(worker, args.series)
        time.sleep(3600)  # alive until the parent saw every write land

    pids = fork_workers(args.processes, write)
    load_pytheus(args.backend)
    pytheus_metrics()
    # pytheus-backend-rs writes from a thread of its own: wait for every
    # worker's last write (the 'written' gauge) to be in Redis.
    deadline = time.monotonic() + 120
    while generate_metrics().count("bench_worker_written{") < args.processes:
        if time.monotonic() > deadline:
            raise RuntimeError("pytheus workers' writes did not all reach Redis")
        time.sleep(0.2)
    populate_s = time.perf_counter() - start
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    reap(pids)
    ms, rounds = timed_rounds(generate_metrics, args.rounds, args.budget_s)
    commands, body = count_commands(generate_metrics)
    return {
        "ms": ms,
        "rounds": rounds,
        "populate_s": populate_s,
        "lines": body.count("\n"),  # type: ignore[attr-defined]
        "commands": commands,
        "keys": int(redis_cli("DBSIZE").strip()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("instance", "scrape", "load", "pytheus"))
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=2.0)
    parser.add_argument("--directory", default="")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--backend", choices=("python", "rs"), default="rs")
    args = parser.parse_args()
    phase = {
        "instance": phase_instance,
        "scrape": phase_scrape,
        "load": phase_load,
        "pytheus": phase_pytheus,
    }[args.phase]
    sys.stdout.write("\n" + json.dumps(phase(args)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
