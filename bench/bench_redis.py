"""Benchmark: Redis mode of gunicorn_prometheus_exporter vs gunicorn-prometheus-exporter 0.2.4.

The peer is gunicorn-prometheus-exporter 0.2.4 from PyPI, whose Redis backend
is the seed of ours. It has the same import name as ours, so it runs in a
virtual environment of its own, which this script creates when it is missing:

    ${XDG_CACHE_HOME:-~/.cache}/gpe-bench/peer-venv-0.2.4
    (override with GPE_BENCH_PEER_VENV=/some/path; outside the repository)

with ``gunicorn-prometheus-exporter==0.2.4 redis prometheus_client==<ours>``
installed by pip (prometheus_client pinned to the version next to ours).

Both implementations are measured the same way: ``bench_redis_worker.py`` is
run as a subprocess, with the current interpreter for ours and the peer
venv's for the peer, one subprocess per phase, and prints JSON. Each phase has
its own Redis database and key prefix on one real ``redis-server``
(tests/redis_server.py) on a free loopback port; nothing else talks to it.

What is measured
----------------
1. Hot path: ns per ``Counter.labels(...).inc()`` and
   ``Histogram.labels(...).observe(v)`` (child fetched once) after each
   implementation's ``get_redis_storage_manager().setup()``. Best of R
   interleaved loops of N calls; the peer does its Redis round trips in the
   call (N is small for it), ours stores into memory and a background mirror
   sends changes every REDIS_FLUSH_INTERVAL (1 s, the default).
2. Scrape: 8 forked worker processes write 1000 series each (counters, a
   histogram, ``all`` gauges; the same deterministic updates for both)
   through the implementation's Redis value class. (No other gauge mode: the
   peer merges none of them correctly, see bench_redis_worker.series_mix.) Ours: workers
   write native values, one mirror pass (``pass_now()``) sends the whole
   directory while they are alive. Peer: its RedisValue writes go to Redis
   in the call. Then ms per scrape: ours ``RedisMultiProcessCollector.render()``
   in steady state (one collector scraped repeatedly; the first scrapes are
   not timed) and cold (new client + collector, first render, connect
   included), and ours ``collect()`` + ``generate_latest``; the peer's
   ``RedisMultiProcessCollector.collect()`` + ``generate_latest``. Redis
   commands per scrape are counted server-side (CONFIG RESETSTAT +
   INFO commandstats around one scrape) and, for ours, by ``stats()``. The
   merged samples of both are compared with pid labels removed (outside
   timing), with each other and with prometheus_client's own
   MultiProcessCollector over the same workload written to files.

Run
---
    python bench/bench_redis.py           # full, about a minute (+ peer venv creation once)
    python bench/bench_redis.py --quick   # fewer repeats, about 30 s
    python bench/bench_redis.py --plot DIR   # PNG figures into DIR (default docs/plots)

The script always exits 0: targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from plots import add_plot_argument, grouped_bars, lines
from timing import print_table, print_targets

HERE = Path(__file__).resolve().parent
WORKER = HERE / "bench_redis_worker.py"
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_redis_worker import HISTOGRAM_ENTRIES, series_mix  # noqa: E402
from redis_server import RedisServer  # noqa: E402  (tests/redis_server.py)

PEER_VERSION = "0.2.4"
OPS_TARGET = 2000.0  # ours >= 2000x faster per call than the peer
SCRAPE_TARGET = 100.0  # ours steady-state render() >= 100x faster than the peer's scrape

PROCESSES = 8
SERIES = 1000

API_OPS = ("Counter.labels(...).inc()", "Histogram.labels(...).observe(v)")


@dataclass(frozen=True)
class Config:
    ours_ops: int  # calls per timed loop, ours
    ours_repeats: int
    peer_ops: int  # calls per timed loop, peer (~1 ms per call)
    peer_repeats: int
    scrape_rounds: int  # minimum timed rounds of ours (steady, collect, cold)
    scrape_budget_s: float  # ours: keep adding rounds until this much time is spent
    peer_scrape_rounds: int  # timed peer scrapes (2-3 s each)
    sweep: tuple[int, ...] = (100, 300, 1000, 3000)  # series per process, ours, for the figure


FULL = Config(
    ours_ops=200_000,
    ours_repeats=7,
    peer_ops=2000,
    peer_repeats=3,
    scrape_rounds=5,
    scrape_budget_s=3.0,
    peer_scrape_rounds=5,
)
QUICK = Config(
    ours_ops=50_000,
    ours_repeats=5,
    peer_ops=300,
    peer_repeats=3,
    scrape_rounds=3,
    scrape_budget_s=1.0,
    peer_scrape_rounds=1,
)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"


def fmt_ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def redis_server_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())
    except OSError:
        return "not found"


class WorkerError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# The peer's virtual environment
# --------------------------------------------------------------------------


def peer_venv_dir() -> Path:
    override = os.environ.get("GPE_BENCH_PEER_VENV")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "gpe-bench" / f"peer-venv-{PEER_VERSION}"


def _peer_versions(python: Path) -> tuple[str, str] | None:
    if not python.exists():
        return None
    probe = (
        "import importlib.metadata as m, redis; "
        "print(m.version('gunicorn-prometheus-exporter'), m.version('prometheus_client'))"
    )
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, env=clean_env(peer=True)
    )
    if done.returncode != 0:
        return None
    gpe_version, pc_version = done.stdout.split()
    return gpe_version, pc_version


def ensure_peer_venv() -> tuple[Path, str]:
    """The peer venv's python, and how it was had ("reused" / "created in N s")."""
    venv = peer_venv_dir()
    python = venv / "bin" / "python"
    wanted = (PEER_VERSION, version("prometheus_client"))
    if _peer_versions(python) == wanted:
        return python, "reused"
    start = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"gunicorn-prometheus-exporter=={PEER_VERSION}",
            "redis",
            f"prometheus_client=={wanted[1]}",
        ],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=clean_env(peer=True))
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"creating the peer venv failed: {' '.join(step)}\n{tail}")
    got = _peer_versions(python)
    if got != wanted:
        raise RuntimeError(f"peer venv {venv} has {got}, wanted {wanted}")
    return python, f"created in {time.perf_counter() - start:.0f} s"


# --------------------------------------------------------------------------
# Worker subprocesses
# --------------------------------------------------------------------------


def clean_env(peer: bool) -> dict[str, str]:
    """The environment without anything that would point an implementation
    elsewhere (Redis settings, a multiprocess directory; PYTHONPATH for the
    peer, which must import its own package)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REDIS_")
        and k
        not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", "PROMETHEUS_REDIS_URL")
    }
    if peer:
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
    return env


class Runner:
    def __init__(self, server: RedisServer, peer_python: Path | None) -> None:
        self.server = server
        self.peer_python = peer_python
        self.next_db = 0
        self.dbs: dict[tuple[str, str], int] = {}

    def run(self, phase: str, impl: str, timeout: float, **options: object) -> dict:
        if impl == "peer" and self.peer_python is None:
            raise WorkerError("peer venv unavailable")
        # ours and the prometheus_client reference: this interpreter.
        python = str(self.peer_python) if impl == "peer" else sys.executable
        db = self.next_db
        self.next_db += 1
        self.dbs[(phase, impl)] = db
        env = clean_env(peer=impl == "peer")
        env.update(self.server.env())
        env.update(
            REDIS_DB=str(db), REDIS_KEY_PREFIX=f"gpebench-{impl}-{phase}", REDIS_INSTANCE_ID="bench"
        )
        if phase == "scrape":
            env["REDIS_FLUSH_INTERVAL"] = "3600"  # ours: only pass_now() mirrors
        args = [python, str(WORKER), phase, "--impl", impl]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(HERE)
            )
        except subprocess.TimeoutExpired:
            raise WorkerError(f"{impl} {phase}: timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            rc = done.returncode
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            tail = [
                line for line in done.stderr.strip().splitlines() if not line.startswith("INFO:")
            ][-6:]
            raise WorkerError(f"{impl} {phase} worker failed ({how}): " + " / ".join(tail))
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1])

    def dbsize(self, phase: str, impl: str) -> int | None:
        db = self.dbs.get((phase, impl))
        if db is None:
            return None
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.server.port), "-n", str(db), "DBSIZE"],
            capture_output=True,
            text=True,
        )
        return int(out.stdout.strip()) if out.returncode == 0 else None


def attempt(run: object) -> tuple[dict | None, str | None]:
    try:
        return run(), None  # type: ignore[operator]
    except Exception as exc:  # reported, never raised
        return None, str(exc)


# --------------------------------------------------------------------------
# 1. Hot path
# --------------------------------------------------------------------------


def bench_ops(cfg: Config, runner: Runner, info: dict, plot: str = "") -> list[str]:
    ours, ours_err = attempt(
        lambda: runner.run("ops", "ours", 120, ops=cfg.ours_ops, repeats=cfg.ours_repeats)
    )
    peer, peer_err = attempt(
        lambda: runner.run("ops", "peer", 150, ops=cfg.peer_ops, repeats=cfg.peer_repeats)
    )
    for result in (ours, peer):
        if result:
            info[result["impl"]] = result

    print("## Hot path: ns per call with Redis on\n")
    print(
        f"- ours: best of {cfg.ours_repeats} x {cfg.ours_ops:,} calls; peer: best of "
        f"{cfg.peer_repeats} x {cfg.peer_ops:,} calls (operations interleaved within each)"
    )
    print(
        "- through prometheus_client's API, labelled child fetched once, after "
        "`get_redis_storage_manager().setup()`; default settings otherwise (TTL 300 s)"
    )
    if peer:
        n = peer["commands_calls"]
        per_call = "; ".join(
            f"{name.split('.')[0]} {total_calls(c) / n:g} ({fmt_commands(c, n)})"
            for name, c in peer["commands_per_call"].items()
        )
        print(
            f"- the peer's call does synchronous Redis round trips, commands per call: "
            f"{per_call} (counted server-side over {n} calls)"
        )
    print(
        "- ours: the call stores into memory; the mirror sends changes every 1 s "
        "(REDIS_FLUSH_INTERVAL), off the request path"
    )
    if ours and peer:
        print(
            f"- empty `for` loop overhead, included in every figure: {ours['loop_ns']:.1f} ns/iter"
        )
    print(f"- target: ours >= {OPS_TARGET:,.0f}x faster per call\n")
    misses = []
    for impl, err in (("ours", ours_err), ("peer", peer_err)):
        if err:
            print(f"{impl} failed: {err}\n")
            misses.append(f"hot path: {impl} failed")
    if ours and not ours.get("counter_value_ok"):
        misses.append("hot path: ours lost counter increments")
    if peer and not peer.get("counter_value_ok"):
        print("- note: the peer's counter value did not equal the number of increments")
    rows = []
    for name in API_OPS:
        ours_ns = ours["ns"][name] if ours else None
        peer_ns = peer["ns"][name] if peer else None
        ratio = peer_ns / ours_ns if ours_ns and peer_ns else None
        rows.append(
            [
                name,
                f"{peer_ns:,.0f}" if peer_ns else "n/a",
                f"{ours_ns:.0f}" if ours_ns else "n/a",
                fmt_ratio(ratio) if ratio else "n/a",
            ]
        )
        if ratio is not None and ratio < OPS_TARGET:
            misses.append(f"{name}: ours vs peer {ratio:,.0f}x < {OPS_TARGET:,.0f}x")
    print_table(["operation", f"peer {PEER_VERSION} ns", "ours ns", "ours vs peer"], rows)
    print()
    if ours and peer:
        grouped_bars(
            plot,
            "increment_cost_redis.png",
            "Cost of one update with Redis storage on (ns per call, less is better)",
            API_OPS,
            {
                f"peer gunicorn-prometheus-exporter {PEER_VERSION} (Redis)": [
                    peer["ns"][n] for n in API_OPS
                ],
                "ours (Redis: files + the agent's mirror)": [ours["ns"][n] for n in API_OPS],
            },
            "ns per call (log scale)",
            log=True,
            note="bench/bench_redis.py: redis-server on loopback; a shared 2-core machine",
        )
    return misses


# --------------------------------------------------------------------------
# 2. Scrape
# --------------------------------------------------------------------------


def fmt_commands(commands: dict[str, list[int]], per: int = 1, usec: bool = False) -> str:
    """ "HMGET 8,000 (11.2 ms), ..." from {name: [calls, usec]}, most calls first."""
    parts = []
    for name, (calls, us) in sorted(commands.items(), key=lambda item: -item[1][0]):
        part = f"{name.upper()} {calls / per:,g}"
        if usec:
            part += f" ({us / 1000:.1f} ms)"
        parts.append(part)
    return ", ".join(parts)


def total_calls(commands: dict[str, list[int]]) -> int:
    return sum(calls for calls, _ in commands.values())


def server_ms(commands: dict[str, list[int]]) -> str:
    return f"{sum(us for _, us in commands.values()) / 1000:,.1f}"


REL_TOL = 1e-12  # sums over processes in another order differ in the last bits


def grouped(rows: list) -> dict[str, list[float]]:
    """Sample values by (family, type, sample name, labels without pid); an
    'all' gauge has one value per process under one key."""
    out: dict[str, list[float]] = {}
    for family, typ, name, labels, value in rows:
        out.setdefault(json.dumps([family, typ, name, labels]), []).append(value)
    return {key: sorted(values) for key, values in out.items()}


def compare_samples(a_rows: list, b_rows: list, a: str, b: str) -> tuple[bool, int, list[str]]:
    """(equal within REL_TOL, values not bit-identical, details)."""
    ga, gb = grouped(a_rows), grouped(b_rows)
    only_a = sorted(set(ga) - set(gb))
    only_b = sorted(set(gb) - set(ga))
    differ, inexact = [], 0
    for key in sorted(set(ga) & set(gb)):
        va, vb = ga[key], gb[key]
        if len(va) != len(vb) or not all(
            math.isclose(x, y, rel_tol=REL_TOL) for x, y in zip(va, vb, strict=False)
        ):
            differ.append(f"{key}: {a} {va[:4]} vs {b} {vb[:4]}")
        elif va != vb:
            inexact += 1
    if not (only_a or only_b or differ):
        return True, inexact, []
    lines = [
        f"{len(a_rows):,} samples {a}, {len(b_rows):,} {b}: {len(only_a):,} series only "
        f"in {a}, {len(only_b):,} only in {b}, {len(differ):,} with other values; e.g."
    ]
    lines += [f"  - only in {a}: {key}" for key in only_a[:3]]
    lines += [f"  - only in {b}: {key}" for key in only_b[:3]]
    lines += [f"  - {line}" for line in differ[:3]]
    return False, inexact, lines


def describe_workload() -> str:
    counters, histogram_labelsets, gauges_all = series_mix(SERIES)
    return (
        f"{counters} counter + {histogram_labelsets} histogram labelsets x "
        f"{HISTOGRAM_ENTRIES} (15 buckets + _sum) + {gauges_all} 'all' gauge values"
    )


def bench_scrape(cfg: Config, runner: Runner, info: dict) -> list[str]:
    ours, ours_err = attempt(
        lambda: runner.run(
            "scrape",
            "ours",
            120,
            processes=PROCESSES,
            series=SERIES,
            rounds=cfg.scrape_rounds,
            budget_s=cfg.scrape_budget_s,
        )
    )
    peer, peer_err = attempt(
        lambda: runner.run(
            "scrape", "peer", 150, processes=PROCESSES, series=SERIES, rounds=cfg.peer_scrape_rounds
        )
    )
    reference, reference_err = attempt(
        lambda: runner.run("reference", "prometheus_client", 60, processes=PROCESSES, series=SERIES)
    )

    workload = f"{PROCESSES} processes x {SERIES:,} series"
    print(f"## Scrape: ms per scrape of {workload}\n")
    print(
        f"- per process: {describe_workload()}; each value is one Redis hash (+ one meta "
        "hash) per process. Gauges are 'all' only: the peer merges no other mode correctly"
    )
    print(
        "- ours steady = `render()` of one collector scraped before (best of N); "
        "ours cold = new client + collector, first `render()` (connect included)"
    )
    print(
        f"- peer = `RedisMultiProcessCollector.collect()` + `generate_latest` "
        f"(best of {cfg.peer_scrape_rounds})"
    )
    misses = []
    for impl, err in (("ours", ours_err), ("peer", peer_err)):
        if err:
            print(f"- {impl} FAILED: {err}")
            misses.append(f"scrape: {impl} failed")
    if reference_err:
        print(f"- reference (prometheus_client files mode) FAILED: {reference_err}")
    if ours and peer:
        same, inexact, detail = compare_samples(ours["samples"], peer["samples"], "ours", "peer")
        notes = []
        if inexact:
            notes.append(
                f"{inexact} values equal only within {REL_TOL:g} relative: float sums "
                "over the processes taken in another order"
            )
        if reference:
            against = []
            for impl, result in (("ours", ours), ("peer", peer)):
                equal, _, ref_detail = compare_samples(
                    result["samples"], reference["samples"], impl, "prometheus_client"
                )
                against.append(f"{impl} {'=' if equal else '!='}")
                if not equal:
                    detail += ref_detail
                    if impl == "ours":
                        misses.append("scrape: ours differs from prometheus_client's own merge")
            notes.append(
                f"{' and '.join(against)} prometheus_client's MultiProcessCollector "
                "over the same workload in files"
            )
        print(
            f"- equivalent: {'yes' if same else 'no'} ({len(ours['samples']):,} merged "
            "samples, pid labels removed, compared outside timing; " + "; ".join(notes) + ")"
        )
        for line in detail:
            print(f"  {line}")
        if not same:
            misses.append("scrape: ours and the peer's samples differ")
    else:
        print("- equivalent: n/a (one side failed)")
    print(f"- target: steady-state speedup >= {SCRAPE_TARGET:.0f}x\n")

    peer_ms = peer["ms"]["peer_collect_generate_latest"] if peer else None
    ours_ms = ours["ms"] if ours else {}
    steady = ours_ms.get("ours_render")
    speedup = peer_ms / steady if peer_ms and steady else None
    header = [
        "workload",
        "peer ms",
        "ours cold ms",
        "ours collect()+generate_latest ms",
        "ours render() ms",
        "speedup (render)",
    ]
    row = [
        f"{workload} ({(ours or peer or {}).get('output_lines', 0):,} lines out, "
        f"N={ours['rounds'] if ours else '-'})",
        fmt_ms(peer_ms) if peer_ms else "n/a",
        fmt_ms(ours_ms["ours_cold_render"]) if ours else "n/a",
        fmt_ms(ours_ms["ours_collect_generate_latest"]) if ours else "n/a",
        fmt_ms(steady) if steady else "n/a",
        fmt_ratio(speedup) if speedup else "n/a",
    ]
    print_table(header, [row])
    print()
    if speedup is not None and speedup < SCRAPE_TARGET:
        misses.append(f"scrape {workload}: {speedup:.1f}x < {SCRAPE_TARGET:.0f}x")
    notes = []
    if peer:
        each = ", ".join(fmt_ms(ms) for ms in peer["all_ms"]["peer_collect_generate_latest"])
        notes.append(
            f"Every peer scrape, ms: {each} (its round trips cost more when the "
            "scheduler puts it and redis-server on different cores)."
        )
    if peer and ours:
        cold = peer_ms / ours_ms["ours_cold_render"]
        notes.append(f"Ours' cold first scrape is {fmt_ratio(cold)} faster than the peer's best.")
    if notes:
        print(" ".join(notes) + "\n")

    rows = []
    if ours:
        stats, cold_stats = ours["stats"], ours["cold_stats"]
        rows.append(
            [
                "ours, steady",
                f"{total_calls(ours['commands']):,}",
                f"{stats['commands']:,}",
                f"{stats['keys']:,}",
                server_ms(ours["commands"]),
                fmt_commands(ours["commands"], usec=True),
            ]
        )
        cold = ours["cold_commands"]
        rows.append(
            [
                "ours, cold",
                f"{total_calls(cold):,}",
                f"{cold_stats['commands']:,}",
                f"{cold_stats['keys']:,}",
                server_ms(cold),
                fmt_commands(cold, usec=True),
            ]
        )
    if peer:
        rows.append(
            [
                f"peer {PEER_VERSION}",
                f"{total_calls(peer['commands']):,}",
                "-",
                "-",
                server_ms(peer["commands"]),
                fmt_commands(peer["commands"], usec=True),
            ]
        )
    if rows:
        print(
            "Redis commands per scrape (server-side: CONFIG RESETSTAT + INFO commandstats "
            "around one scrape; ours also by `stats()`). Server ms = the commands' execution "
            "time in redis-server (commandstats usec), without network I/O and parsing:\n"
        )
        print_table(
            [
                "scrape",
                "commands (server)",
                "commands (stats())",
                "metric keys read",
                "server ms",
                "by command",
            ],
            rows,
        )
        print()
    sizes = []
    for impl, result in (("ours", ours), ("peer", peer)):
        n = runner.dbsize("scrape", impl)
        if result is not None and n is not None:
            sizes.append(f"{impl} {n:,} (populated in {result['populate_s']:.1f} s)")
    if sizes:
        print(f"Redis keys after populating (metric + meta hashes): {'; '.join(sizes)}.\n")
    for result in (ours, peer):
        if result:
            info.setdefault(result["impl"], result)
    if peer:
        info["peer_scrape"] = peer  # for the figure of the sweep
    return misses


# --------------------------------------------------------------------------


def bench_sweep(cfg: Config, runner: Runner, info: dict, plot: str) -> list[str]:
    """Ours' Redis scrape against series count (8 processes): a figure and its table.
    The peer's figure is its measurement at 8 x 1000 above (it takes seconds)."""
    results = []
    for series in cfg.sweep:
        result = runner.run(
            "scrape",
            "ours",
            240,
            processes=PROCESSES,
            series=series,
            rounds=cfg.scrape_rounds,
            budget_s=cfg.scrape_budget_s,
        )
        results.append((PROCESSES * series, result["ms"]))
    print(f"## Redis scrape against series count: {PROCESSES} processes, ms per scrape\n")
    print_table(
        ["series (all processes)", "ours cold ms", "ours render() ms"],
        [
            [f"{n:,}", fmt_ms(ms["ours_cold_render"]), fmt_ms(ms["ours_render"])]
            for n, ms in results
        ],
    )
    print()
    totals = [n for n, _ in results]
    series = {
        "ours RedisMultiProcessCollector.render(), cold": (
            totals,
            [ms["ours_cold_render"] for _, ms in results],
        ),
        "ours render() (the sidecar's steady state)": (
            totals,
            [ms["ours_render"] for _, ms in results],
        ),
    }
    peer = info.get("peer_scrape")
    if peer:
        series[f"peer {PEER_VERSION} collect() + generate_latest"] = (
            [PROCESSES * SERIES],
            [peer["ms"]["peer_collect_generate_latest"]],
        )
    lines(
        plot,
        "scrape_redis.png",
        f"Scrape of {PROCESSES} processes' series from Redis",
        series,
        "series in Redis",
        "ms per scrape",
        note="bench/bench_redis.py: redis-server on loopback; a shared 2-core machine",
    )
    return []


def print_machine(peer_python: Path | None, peer_how: str) -> None:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import gunicorn_prometheus_exporter as gpe

    print("## Machine\n")
    print(f"- nproc: {usable} (cpu_count {os.cpu_count()}), {cpu_model()}")
    print(f"- python: {platform.python_implementation()} {platform.python_version()}")
    print(f"- prometheus_client: {version('prometheus_client')} (both)")
    print(
        f"- ours: gunicorn-prometheus-exporter {version('gunicorn-prometheus-exporter')} "
        f"({Path(gpe.__file__).parent})"
    )
    if peer_python is not None:
        print(
            f"- peer: gunicorn-prometheus-exporter {PEER_VERSION} + redis-py in "
            f"{peer_python.parent.parent} ({peer_how})"
        )
    else:
        print(f"- peer: unavailable ({peer_how})")
    print(f"- redis-server: {redis_server_version()} on 127.0.0.1 (loopback TCP), no persistence")
    print()


def run_section(name: str, section: object) -> list[str]:
    try:
        return section()  # type: ignore[operator]
    except Exception as exc:  # a benchmark reports, it does not fail CI
        print(f"{name} failed: {exc!r}\n")
        return [f"{name}: failed ({exc!r})"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, ~30 s")
    add_plot_argument(parser)
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()

    quick = " (--quick)" if cfg is QUICK else ""
    print(
        f"# gunicorn_prometheus_exporter Redis benchmark vs gunicorn-prometheus-exporter "
        f"{PEER_VERSION}{quick}\n"
    )
    misses: list[str] = []
    try:
        peer_python, peer_how = ensure_peer_venv()
    except Exception as exc:
        peer_python, peer_how = None, str(exc)
        misses.append(f"peer venv: {exc}")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print_machine(peer_python, peer_how)
        print("targets: missed:\n- redis-server / redis-cli not installed")
        return 0
    print_machine(peer_python, peer_how)
    sys.stdout.flush()
    info: dict = {}
    with RedisServer() as server:
        runner = Runner(server, peer_python)
        misses += run_section("hot path", lambda: bench_ops(cfg, runner, info, args.plot))
        sys.stdout.flush()
        misses += run_section("scrape", lambda: bench_scrape(cfg, runner, info))
        if args.plot:
            sys.stdout.flush()
            misses += run_section("sweep", lambda: bench_sweep(cfg, runner, info, args.plot))
    print(f"Elapsed: {time.perf_counter() - started:.0f} s.\n")
    print_targets(misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
