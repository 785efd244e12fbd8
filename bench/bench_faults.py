"""Benchmark: what faults cost, next to a run without the fault.

1. Requests lost per SIGKILL of a worker under load, for the sync, gthread
   and gevent workers.
2. The agent's scrape latency while 1,000 connections trickle a header line
   per second (slowloris), against the same scrapes alone (the comparison
   with HTTP libraries is bench/bench_http_slowloris.py).

Gunicorn (4 workers, our config, demo/app.py) is loaded by client threads
over loopback; every 0.1 s one worker is killed with SIGKILL. A request is
lost when its client received the whole response but /metrics never counted
it (the worker died between answering and recording). The table shows, per
worker class, the kills, the responses the clients received, the requests
counted, and the loss per kill next to a run without kills. Target: < 0.01
lost per kill.

    python bench/bench_faults.py [--seconds 10] [--workers sync,gthread,gevent] [--connections 1000]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_http_slowloris as slowloris  # noqa: E402
from gunicorn_runner import Gunicorn, value  # noqa: E402
from timing import print_table, print_targets  # noqa: E402

TARGET_LOSS_PER_KILL = 0.01
CLIENTS = 8


def load(port: int, stop: threading.Event, done: list[int]) -> None:
    """One client: a new connection per request; counts complete 200s."""
    ok = 0
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            if resp.read() == b"Hello, world!\n" and resp.status == 200:
                ok += 1
        except (OSError, http.client.HTTPException):
            pass  # the worker died under this request: not received, not owed
        finally:
            conn.close()
    done.append(ok)


def run(tmp: Path, worker_class: str, seconds: float, kill_every: float | None) -> dict[str, float]:
    extra = ["--threads", "4"] if worker_class == "gthread" else []
    with Gunicorn(tmp, workers=4, worker_class=worker_class, extra_args=extra) as g:
        stop = threading.Event()
        done: list[int] = []
        clients = [threading.Thread(target=load, args=(g.port, stop, done)) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        kills = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(kill_every or 0.1)
            if kill_every:
                victims = g.worker_pids()
                if victims:
                    try:
                        os.kill(random.choice(victims), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
        stop.set()
        for c in clients:
            c.join()
        received = sum(done)
        # a recorded request is in the files at once; give the last ones a moment
        time.sleep(1.0)
        counted = value(g.samples(), "gunicorn_worker_requests_total")
    return {
        "kills": kills,
        "received": received,
        "counted": counted,
        "lost": max(0.0, received - counted),
    }


def slowloris_latency(tmp: Path, connections: int) -> tuple[list[float], list[float], int, int]:
    """Scrape latencies of the agent alone and under slowloris, and failures."""
    import subprocess

    from gunicorn_prometheus_exporter import agent as agent_module

    directory = tmp / "slowloris-mp"
    slowloris.write_directory(directory, slowloris.BODY_LINES)
    port = slowloris.free_port()
    proc = subprocess.Popen(
        [
            str(agent_module.BINARY),
            "--directory",
            str(directory),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                slowloris.request(port, slowloris.SCRAPE, 1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        alone, failed_alone = slowloris.scrape_latencies(port, 200, 15)
        trickle = slowloris.Trickle(port, connections, 25)
        try:
            time.sleep(1.5)
            loaded, failed_loaded = slowloris.scrape_latencies(port, 200, 15)
        finally:
            trickle.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    return alone, loaded, failed_alone, failed_loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", default="sync,gthread,gevent")
    parser.add_argument("--connections", type=int, default=1000, help="trickling connections")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 500)), hard))
    kinds = [
        k for k in args.workers.split(",") if k != "gevent" or importlib.util.find_spec("gevent")
    ]
    rows, misses = [], []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        for kind in kinds:
            calm = run(Path(tmp), kind, min(args.seconds, 3.0), None)
            faulty = run(Path(tmp), kind, args.seconds, 0.1)
            per_kill = faulty["lost"] / faulty["kills"] if faulty["kills"] else 0.0
            rows.append(
                [
                    kind,
                    f"{calm['received']:,}",
                    f"{calm['lost']:,.0f}",
                    f"{faulty['kills']:,}",
                    f"{faulty['received']:,}",
                    f"{faulty['counted']:,.0f}",
                    f"{faulty['lost']:,.0f}",
                    f"{per_kill:.4f}",
                ]
            )
            if per_kill >= TARGET_LOSS_PER_KILL or calm["lost"]:
                misses.append(
                    f"{kind}: {per_kill:.4f} lost per kill (target < {TARGET_LOSS_PER_KILL})"
                )
        alone, loaded, failed_alone, failed_loaded = slowloris_latency(Path(tmp), args.connections)
    print(
        f"Requests lost per SIGKILL of a worker ({CLIENTS} clients, 4 workers, a kill every 0.1 s, "
        f"{args.seconds:g} s):\n"
    )
    print_table(
        [
            "worker",
            "no kills: received",
            "no kills: lost",
            "kills",
            "received",
            "counted",
            "lost",
            "lost per kill",
        ],
        rows,
    )
    p99 = [
        statistics.quantiles(xs, n=100)[98] * 1000 if len(xs) > 1 else float("nan")
        for xs in (alone, loaded)
    ]
    p50 = [statistics.median(xs) * 1000 if xs else float("nan") for xs in (alone, loaded)]
    print(
        f"\nThe agent's /metrics (~150 KB) alone and with {args.connections:,} connections trickling a header "
        "line per second (ms):\n"
    )
    print_table(
        ["", "p50", "p99", "scrapes failed"],
        [
            [
                "alone",
                f"{p50[0]:.1f}",
                f"{p99[0]:.1f}",
                f"{failed_alone}/{failed_alone + len(alone)}",
            ],
            [
                "slowloris",
                f"{p50[1]:.1f}",
                f"{p99[1]:.1f}",
                f"{failed_loaded}/{failed_loaded + len(loaded)}",
            ],
            ["ratio", f"{p50[1] / p50[0]:.2f}x", f"{p99[1] / p99[0]:.2f}x", ""],
        ],
    )
    if not p99[1] < 100 or failed_loaded:
        misses.append(
            f"slowloris: p99 {p99[1]:.1f} ms, {failed_loaded} failed (target p99 < 100 ms, none failed)"
        )
    print()
    print_targets(misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
