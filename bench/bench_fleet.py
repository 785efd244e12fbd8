"""Benchmark: a fleet of instances in Redis mode (issue 10), in each key layout.

N instances x W workers x S series: each instance is a multiprocess
directory of its own whose W forked workers write S series each (the mix of
bench_redis.py: counters, a histogram, 'all' gauges) through our native
values, and whose mirror, with its own REDIS_INSTANCE_ID, sends it to one
real ``redis-server`` (tests/redis_server.py, a fresh one per fleet size,
loopback, no persistence) in one ``pass_now()``. Each instance runs as a
subprocess of ``bench_fleet_worker.py``, one after the other. Then, per size:

- Redis ``used_memory`` and key count (DBSIZE) of the fleet;
- ms per scrape of one ``RedisMultiProcessCollector`` over the prefix:
  steady (one collector scraped before; best of N) and cold (new client +
  collector, connect included), with the Redis commands of one of each
  (server-side: CONFIG RESETSTAT + INFO commandstats); a scrape refused at
  the default settings (reply limit, socket timeout) is a missed target,
  and is measured again with those raised;
- file mode: ``render_directory`` of one instance's directory (best of N);
- mirror commands per second of one instance under a steady request load:
  its W workers serve requests (a counter and a histogram observation each,
  ``--rate`` a second each) with the mirror on, REDIS_FLUSH_INTERVAL 1 s;
  commands counted server-side over a few seconds;
- the longest server-side command of each phase (populating, scraping,
  load) from SLOWLOG;
- for N = 1 only: the same series written by W processes through pytheus
  with its Redis backends (pytheus-backend-rs, and pure Python), and ms per
  ``generate_metrics()``. pytheus has no instances (every process adds into
  the same keys), so it has nothing to compare with at N > 1.

pytheus runs in a virtual environment of its own, created when missing:

    ${XDG_CACHE_HOME:-~/.cache}/gpe-bench/pytheus-venv-<version>
    (override with GPE_BENCH_PYTHEUS_VENV=/some/path)

Run
---
    python bench/bench_fleet.py                  # 1x8x1000 and 25x8x1000, a few minutes
    python bench/bench_fleet.py --quick          # small sizes, under a minute
    python bench/bench_fleet.py --instances 200  # 200x8x1000 (any list of N)

Each size runs once per layout (``--layout``: instance, series or both, the
default): REDIS_LAYOUT=instance (one hash per instance) and the 0.2.x series
layout (keys per series and process). The targets are checked for the
instance layout, the default; the series layout is there to compare.

Targets are printed beside the figures, not enforced: the exit status is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

from timing import print_table, print_targets

HERE = Path(__file__).resolve().parent
WORKER = HERE / "bench_fleet_worker.py"
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_redis import (  # noqa: E402
    attempt,
    clean_env,
    cpu_model,
    fmt_commands,
    fmt_ms,
    redis_server_version,
    server_ms,
    total_calls,
)
from bench_redis_worker import redis_cli  # noqa: E402
from redis_server import RedisServer  # noqa: E402  (tests/redis_server.py)

PYTHEUS = ("pytheus==0.6.1", "pytheus-backend-rs==0.0.9", "redis")
PREFIX = "fleet"
# Commands at least this long are logged. 0 would log every command, and
# the log keeps only its last SLOWLOG_LEN: a fleet's passes send hundreds of
# thousands; a floor far below the 5 ms target keeps the longest.
SLOWLOG_US = 200
SLOWLOG_LEN = 10_000
BENCH_COMMANDS = {"SLOWLOG", "CONFIG", "INFO", "DBSIZE", "FLUSHALL"}  # this script's own
MAX_COMMAND_MS = 5.0
# When a scrape fails at the default settings: the largest reply limit and a
# long timeout, to measure it anyway (reported beside the failure).
RAISED = {"REDIS_MAX_REPLY_BYTES": str(4 << 30), "REDIS_SOCKET_TIMEOUT": "120"}
PY = sys.executable  # ours: this interpreter  # target: no server command longer


@dataclass(frozen=True)
class Config:
    instances: tuple[int, ...]
    processes: int
    series: int
    rounds: int  # at least this many timed scrapes...
    budget_s: float  # ...and this many seconds of them
    load_s: float
    rate: float  # requests a second per worker under load


FULL = Config((1, 25), 8, 1000, rounds=5, budget_s=3.0, load_s=5.0, rate=100.0)
QUICK = Config((1, 4), 8, 200, rounds=3, budget_s=0.5, load_s=2.0, rate=100.0)


def size_name(cfg: Config, n: int) -> str:
    return f"{n}x{cfg.processes}x{cfg.series}"


def label(cfg: Config, r: dict) -> str:
    return f"{size_name(cfg, r['n'])} {r['layout']}"


# --------------------------------------------------------------------------
# Subprocesses, Redis
# --------------------------------------------------------------------------


def run_worker(python: str, env: dict[str, str], phase: str, **options: object) -> dict:
    """One phase of bench_fleet_worker.py; its JSON, or WorkerError."""
    args = [python, str(WORKER), phase]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(HERE), timeout=900)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no stderr"]
        # the exception, and what failed workers said before it
        said = [line for line in lines[:-1] if " failed: " in line][-3:]
        raise RuntimeError(
            f"{phase} failed (status {done.returncode}): " + "; ".join([*said, lines[-1]])
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


LAYOUT = "instance"  # REDIS_LAYOUT of the size being measured (set by measure_size)


def server_env(server: RedisServer, **extra: str) -> dict[str, str]:
    env = clean_env(peer=False)
    env.update(server.env())
    env.update(
        REDIS_DB="0",
        REDIS_KEY_PREFIX=PREFIX,
        REDIS_TTL_SECONDS="86400",
        REDIS_LAYOUT=LAYOUT,
        **extra,
    )
    return env


def slowlog_start() -> None:
    redis_cli("CONFIG", "SET", "slowlog-log-slower-than", str(SLOWLOG_US))
    redis_cli("CONFIG", "SET", "slowlog-max-len", str(SLOWLOG_LEN))
    redis_cli("SLOWLOG", "RESET")


def slowlog_longest() -> tuple[float, str, int] | None:
    """(ms, command, entries logged) of the longest command since
    slowlog_start(), or None if none took SLOWLOG_US; the log is reset."""
    entries = json.loads(redis_cli("--json", "SLOWLOG", "GET", str(SLOWLOG_LEN)) or "[]")
    redis_cli("SLOWLOG", "RESET")
    entries = [e for e in entries if e[3][0].upper() not in BENCH_COMMANDS]
    if not entries:
        return None
    _, _, usec, argv, *_ = max(entries, key=lambda e: e[2])
    return usec / 1000, describe_command(argv), len(entries)


def describe_command(argv: list[str]) -> str:
    """ "HSET fleet:... (6 args)" or "EVAL (script, 1,601 keys)" from a SLOWLOG argv
    (which keeps 32 arguments at most, the last one saying how many more)."""
    name = argv[0].upper()
    more = argv[-1].split("(")[-1].split()[0] if argv[-1].endswith("more arguments)") else "0"
    count = len(argv) - 1 + int(more) - (more != "0")
    if name in ("EVAL", "EVALSHA") and len(argv) > 2:
        return f"{name} (script, {int(argv[2]):,} keys)"
    key = argv[1][:48] + ("..." if len(argv[1]) > 48 else "") if len(argv) > 1 else ""
    return f"{name} {key} ({count:,} args)".replace("  ", " ")


def fmt_longest(longest: tuple[float, str, int] | None) -> str:
    if longest is None:
        return f"none >= {SLOWLOG_US / 1000:g} ms"
    ms, command, count = longest
    full = ", the log full: a longer one may be gone" if count >= SLOWLOG_LEN else ""
    return f"{ms:.2f} ms: {command} (of {count:,} >= {SLOWLOG_US / 1000:g} ms{full})"


def used_memory() -> int:
    info = redis_cli("INFO", "memory")
    return int(next(ln for ln in info.splitlines() if ln.startswith("used_memory:")).split(":")[1])


# --------------------------------------------------------------------------
# pytheus's virtual environment
# --------------------------------------------------------------------------


def ensure_pytheus_venv() -> tuple[str, str]:
    """Its python and how it was had ("reused" / "created in N s")."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    default = Path(cache) / "gpe-bench" / f"pytheus-venv-{PYTHEUS[0].split('==')[1]}"
    venv = Path(os.environ.get("GPE_BENCH_PYTHEUS_VENV") or default).expanduser()
    python = str(venv / "bin" / "python")
    probe = [python, "-c", "import pytheus, pytheus_backend_rs, redis"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, "reused"
    start = time.perf_counter()
    venv.parent.mkdir(parents=True, exist_ok=True)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PYTHEUS]
    for step in ([sys.executable, "-m", "venv", "--clear", str(venv)], pip, probe):
        done = subprocess.run(step, capture_output=True, text=True, env=clean_env(peer=True))
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:4])}: {done.stderr.strip()[-300:]}")
    return python, f"created in {time.perf_counter() - start:.0f} s"


# --------------------------------------------------------------------------
# One fleet size
# --------------------------------------------------------------------------


def populate_fleet(cfg: Config, n: int, server: RedisServer, root: Path) -> dict:
    started = time.perf_counter()
    for i in range(n):
        directory = root / f"instance-{i}"
        directory.mkdir()
        env = server_env(
            server,
            PROMETHEUS_MULTIPROC_DIR=str(directory),
            REDIS_INSTANCE_ID=f"instance-{i}",
            REDIS_FLUSH_INTERVAL="3600",  # only pass_now() mirrors
        )
        run_worker(PY, env, "instance", processes=cfg.processes, series=cfg.series)
    return {"populate_s": time.perf_counter() - started}


def measure_size(cfg: Config, n: int, layout: str, pytheus_python: str | None) -> dict:
    """Everything of one fleet size in one layout, on a fresh redis-server."""
    global LAYOUT
    LAYOUT = layout
    out: dict = {"n": n, "layout": layout}
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="gpe-fleet-") as tmp:
        os.environ["REDIS_PORT"] = str(server.port)  # for redis_cli()
        root = Path(tmp)
        slowlog_start()
        out.update(populate_fleet(cfg, n, server, root))
        out["longest_populate"] = slowlog_longest()
        out["used_memory"] = used_memory()
        out["keys"] = int(redis_cli("DBSIZE").strip())
        env = server_env(server, REDIS_FLUSH_INTERVAL="3600")
        scrape = {"rounds": cfg.rounds, "budget_s": cfg.budget_s, "directory": root / "instance-0"}
        out["scrape"], out["scrape_error"] = attempt(
            lambda: run_worker(PY, env, "scrape", **scrape)
        )
        if out["scrape"] is None:  # measured anyway, past the settings that refused it
            env.update(RAISED)
            out["scrape"], _ = attempt(lambda: run_worker(PY, env, "scrape", **scrape))
        out["longest_scrape"] = slowlog_longest()
        load_dir = root / "load"
        load_dir.mkdir()
        env = server_env(
            server,
            PROMETHEUS_MULTIPROC_DIR=str(load_dir),
            REDIS_INSTANCE_ID="load",
            REDIS_FLUSH_INTERVAL="1",
        )
        load = {"processes": cfg.processes, "series": cfg.series, "seconds": cfg.load_s}
        out["load"], out["load_error"] = attempt(
            lambda: run_worker(PY, env, "load", rate=cfg.rate, **load)
        )
        out["longest_load"] = slowlog_longest()
    if n == 1 and pytheus_python:
        out["pytheus"] = {
            backend: measure_pytheus(cfg, pytheus_python, backend) for backend in ("rs", "python")
        }
    return out


def measure_pytheus(cfg: Config, python: str, backend: str) -> tuple[dict | None, str | None]:
    with RedisServer() as server:  # pytheus uses database 0, its keys unprefixed
        os.environ["REDIS_PORT"] = str(server.port)
        env = clean_env(peer=True)
        env.update(server.env())
        return attempt(
            lambda: run_worker(
                python,
                env,
                "pytheus",
                backend=backend,
                processes=cfg.processes,
                series=cfg.series,
                rounds=cfg.rounds,
                budget_s=cfg.budget_s,
            )
        )


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def mirror_rate(result: dict) -> str:
    load = result["load"]
    if not load:
        return "n/a"
    return f"{total_calls(load['commands']) / load['seconds']:,.1f}"


def print_fleet_table(cfg: Config, results: list[dict]) -> None:
    header = [
        "fleet (N x W x S), layout",
        "keys",
        "used_memory MB",
        "steady ms",
        "cold ms",
        "file mode ms (1 instance)",
        "mirror commands/s (1 instance)",
    ]
    rows = []
    for r in results:
        s = r["scrape"]
        rows.append(
            [
                label(cfg, r),
                f"{r['keys']:,}",
                f"{r['used_memory'] / 1e6:,.1f}",
                fmt_ms(s["steady_ms"]) if s else "n/a",
                fmt_ms(s["cold_ms"]) if s else "n/a",
                fmt_ms(s["files_ms"]) if s else "n/a",
                mirror_rate(r),
            ]
        )
    print_table(header, rows)
    print()


def print_details(cfg: Config, results: list[dict]) -> None:
    rows = []
    for r in results:
        s = r["scrape"]
        for what in ("steady", "cold"):
            if s:
                c = s[f"{what}_commands"]
                rows.append(
                    [
                        f"{label(cfg, r)} {what}",
                        f"{total_calls(c):,}",
                        server_ms(c),
                        fmt_commands(c),
                    ]
                )
        if r["load"]:
            c, secs = r["load"]["commands"], r["load"]["seconds"]
            rows.append(
                [
                    f"{label(cfg, r)} mirror, {secs:.1f} s of load",
                    f"{total_calls(c):,}",
                    server_ms(c),
                    fmt_commands(c),
                ]
            )
    if rows:
        print("Redis commands (server-side, INFO commandstats; server ms = execution time):\n")
        print_table(["what", "commands", "server ms", "by command"], rows)
        print()
    rows = [[label(cfg, r), *(fmt_longest(r[f"longest_{p}"]) for p in PHASES)] for r in results]
    print(f"Longest server-side command by phase (SLOWLOG, commands >= {SLOWLOG_US} us):\n")
    print_table(["fleet", *PHASES], rows)
    print()
    for r in results:
        extra = [f"{label(cfg, r)}: populated in {r['populate_s']:.1f} s"]
        if r["scrape"]:
            s = r["scrape"]
            extra.append(
                f"{s['lines']:,} lines out (file mode: {s['files_lines']:,}), "
                f"N={s['steady_rounds']} steady / {s['cold_rounds']} cold"
            )
        for name in ("scrape", "load"):
            if r[f"{name}_error"]:
                extra.append(r[f"{name}_error"])  # "<phase> failed (status N): <exception>"
        if r["scrape_error"] and r["scrape"]:
            raised = ", ".join(f"{k}={v}" for k, v in RAISED.items())
            extra.append(f"the scrape figures above are with {raised}")
        print("- " + "; ".join(extra))
    print()


PHASES = ("populate", "scrape", "load")


def print_pytheus(cfg: Config, result: dict) -> None:
    rows = []
    for backend, (res, err) in result.get("pytheus", {}).items():
        label = "pytheus + pytheus-backend-rs" if backend == "rs" else "pytheus (pure Python)"
        if res is None:
            rows.append([label, "n/a", "-", "-", "-", f"FAILED: {err}"])
            continue
        rows.append(
            [
                label,
                fmt_ms(res["ms"]),
                f"{res['lines']:,}",
                f"{res['keys']:,}",
                f"{total_calls(res['commands']):,}",
                fmt_commands(res["commands"]),
            ]
        )
    if rows:
        print(f"pytheus on the same series, {size_name(cfg, 1)}: ms per `generate_metrics()`:\n")
        print_table(["scrape", "ms", "lines out", "keys", "commands", "by command"], rows)
        print()


def pytheus_rs_ms(result: dict) -> float | None:
    res, _ = result.get("pytheus", {}).get("rs", (None, None))
    return res["ms"] if res else None


def target_rows(cfg: Config, results: list[dict]) -> tuple[list[list[str]], list[str]]:
    """[target, figure, met] rows and the misses."""
    rows: list[list[str]] = []

    def check(target: str, figure: str, met: bool | None) -> None:
        rows.append([target, figure, "n/a" if met is None else ("yes" if met else "no")])

    for r in results:
        if r["layout"] != "instance":  # the default layout is the one with targets
            continue
        name, s = label(cfg, r), r["scrape"]
        steady = s["steady_ms"] if s else None
        if r["scrape_error"]:
            check(f"{name} scrape at the default settings", "failed (see above)", False)
        if r["n"] == 1 and s:
            check(
                f"{name} steady scrape within 2x of file mode",
                f"{fmt_ms(steady)} ms vs 2 x {fmt_ms(s['files_ms'])} ms",
                steady <= 2 * s["files_ms"],
            )
            rs = pytheus_rs_ms(r)
            check(
                f"{name} steady scrape faster than pytheus-rs",
                f"{fmt_ms(steady)} ms vs {fmt_ms(rs) if rs else 'n/a'} ms",
                steady < rs if rs else None,
            )
        if r["n"] == 25 and s:
            check(f"{name} steady scrape under 60 ms", f"{fmt_ms(steady)} ms", steady < 60)
            mb = r["used_memory"] / 1e6
            check(f"{name} used_memory under 15 MB", f"{mb:,.1f} MB", mb < 15)
        if r["n"] == 200 and s:
            check(f"{name} steady scrape under 300 ms", f"{fmt_ms(steady)} ms", steady < 300)
        longest = [r[f"longest_{p}"] for p in PHASES if r[f"longest_{p}"]]
        worst = max((ms for ms, _, _ in longest), default=0.0)
        check(
            f"{name} no server command over {MAX_COMMAND_MS:g} ms",
            f"longest {worst:.2f} ms" if longest else f"none >= {SLOWLOG_US / 1000:g} ms",
            worst <= MAX_COMMAND_MS,
        )
    misses = [f"{t}: {f}" for t, f, met in rows if met == "no"]
    return rows, misses


def print_machine(pytheus_how: str) -> None:
    usable = len(os.sched_getaffinity(0))
    print("## Machine\n")
    print(f"- nproc: {usable} (cpu_count {os.cpu_count()}), {cpu_model()}")
    print(f"- python {sys.version.split()[0]}, prometheus_client {version('prometheus_client')}")
    print(f"- ours: gunicorn-prometheus-exporter {version('gunicorn-prometheus-exporter')}")
    print(f"- pytheus: {', '.join(PYTHEUS[:2])} ({pytheus_how})")
    print(
        f"- redis-server {redis_server_version()}, loopback TCP, no persistence, a fresh one per size"
    )
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--instances", type=int, nargs="+", help="fleet sizes N (default 1 25)")
    parser.add_argument("--no-pytheus", action="store_true", help="skip pytheus (N = 1)")
    parser.add_argument(
        "--layout", choices=("instance", "series", "both"), default="both", help="REDIS_LAYOUT"
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.instances:
        cfg = replace(cfg, instances=tuple(args.instances))
    started = time.perf_counter()
    print(
        f"# Redis fleet benchmark{' (--quick)' if args.quick else ''}: "
        f"{', '.join(size_name(cfg, n) for n in cfg.instances)}\n"
    )
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print("targets: missed:\n- redis-server / redis-cli not installed")
        return 0
    pytheus_python, how = None, "skipped"
    if 1 in cfg.instances and not args.no_pytheus:
        try:
            pytheus_python, how = ensure_pytheus_venv()
        except Exception as exc:  # reported, the rest still runs
            how = f"unavailable: {exc}"
    print_machine(how)
    sys.stdout.flush()
    results = []
    layouts = ("instance", "series") if args.layout == "both" else (args.layout,)
    for n in cfg.instances:
        for i, layout in enumerate(layouts):
            # pytheus has no layouts: measured once per size
            results.append(measure_size(cfg, n, layout, pytheus_python if i == 0 else None))
    print("## Fleet\n")
    print_fleet_table(cfg, results)
    print_details(cfg, results)
    for r in results:
        if r["n"] == 1 and "pytheus" in r:
            print_pytheus(cfg, r)
    rows, misses = target_rows(cfg, results)
    print("## Targets (reported, not enforced)\n")
    print_table(["target", "figure", "met"], rows)
    print(f"\nElapsed: {time.perf_counter() - started:.0f} s.\n")
    print_targets(misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
