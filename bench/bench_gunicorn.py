"""Benchmark: Gunicorn throughput with the exporter on, against Gunicorn
without metrics and with gunicorn-prometheus-exporter 0.2.4.

A hello-world WSGI app (demo/app.py, path "/") under Gunicorn with 2 sync
workers is loaded with wrk (Debian's package) over loopback:

* none          - Gunicorn alone
* peer 0.2.4    - gunicorn-prometheus-exporter 0.2.4 (its PrometheusWorker and
                  hooks, file storage), in a virtual environment of its own;
                  0.2.4 does not run on Gunicorn 24+ (its master replaces
                  Gunicorn's signal queue), so that venv has Gunicorn 23 and
                  the peer is compared with Gunicorn 23 alone
* ours (files)  - gunicorn_prometheus_exporter.gunicorn_config
* ours (Redis)  - the same with REDIS_ENABLED=true and a real redis-server

All servers run at once; rounds of wrk runs are interleaved across them so
that machine noise hits each alike; the table shows the median requests per
second and the ratio to Gunicorn alone. Target: ours within 3%.

    python bench/bench_gunicorn.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_redis import ensure_peer_venv  # noqa: E402
from redis_server import RedisServer, free_port  # noqa: E402

TARGET = 0.97  # ours >= 97% of Gunicorn alone
PEER_GUNICORN = "23.0.0"
PEER_CONFIG = """
from gunicorn_prometheus_exporter.hooks import (
    default_on_starting as on_starting, default_when_ready as when_ready,
    default_post_fork as post_fork, default_worker_int as worker_int, default_on_exit as on_exit)
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
"""


class Server:
    def __init__(self, name: str, python: str, config: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="gpe-bench-gunicorn-")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.directory,
               "PROMETHEUS_METRICS_PORT": str(free_port()), "PROMETHEUS_BIND_ADDRESS": "127.0.0.1",
               "GUNICORN_WORKERS": "2", **env}
        self.process = subprocess.Popen(
            [python, "-m", "gunicorn", *config, "--workers", "2", "--bind", f"127.0.0.1:{self.port}",
             "--chdir", str(ROOT / "demo"), "--log-level", "warning", "app:app"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"{name}: Gunicorn did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


def ensure_peer_gunicorn(python: Path) -> None:
    probe = subprocess.run([str(python), "-c", "import gunicorn; print(gunicorn.__version__)"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != PEER_GUNICORN:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"gunicorn=={PEER_GUNICORN}"], check=True, capture_output=True)


def wrk(port: int, seconds: int) -> float:
    done = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                          capture_output=True, text=True)
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed on port {port}: {done.stdout}{done.stderr}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out and "timeout" in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, seconds = (3, 3) if args.quick else (5, 5)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)")
        return 0
    print("# Gunicorn throughput benchmark\n")
    print(f"- nproc: {os.cpu_count()}; python {sys.version.split()[0]}; wrk -t1 -c16 -d{seconds}s, "
          f"{rounds} interleaved rounds, median; Gunicorn 2 sync workers, hello world\n")
    peer_python, how = ensure_peer_venv()
    ensure_peer_gunicorn(peer_python)
    peer_dir = Path(tempfile.mkdtemp(prefix="gpe-bench-peer-conf-"))
    (peer_dir / "peer_conf.py").write_text(PEER_CONFIG)
    redis = RedisServer()
    ours = ["-c", "python:gunicorn_prometheus_exporter.gunicorn_config"]
    servers: list[Server] = []
    try:
        servers = [
            Server("none", sys.executable, [], {}),
            Server(f"none (Gunicorn {PEER_GUNICORN})", str(peer_python), [], {}),
            Server("peer 0.2.4 (files)", str(peer_python), ["-c", str(peer_dir / "peer_conf.py")], {}),
            Server("ours (files)", sys.executable, ours, {}),
            Server("ours (Redis)", sys.executable, ours,
                   {**redis.env(), "REDIS_INSTANCE_ID": "bench", "REDIS_KEY_PREFIX": "bench"}),
        ]
        results: dict[str, list[float]] = {s.name: [] for s in servers}
        for server in servers:
            wrk(server.port, 1)  # warm up
        for _ in range(rounds):
            for server in servers:
                results[server.name].append(wrk(server.port, seconds))
    finally:
        for server in servers:
            server.stop()
        redis.close()
        shutil.rmtree(peer_dir, ignore_errors=True)

    base = statistics.median(results["none"])
    peer_base = statistics.median(results[f"none (Gunicorn {PEER_GUNICORN})"])
    print(f"peer venv: {how}\n")
    print("| configuration | requests/s (median) | min | max | vs Gunicorn alone (same version) |")
    print("|---|---|---|---|---|")
    misses = []
    for name, values in results.items():
        median = statistics.median(values)
        ratio = median / (peer_base if PEER_GUNICORN in name or "peer" in name else base)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} | {max(values):,.0f} | {ratio:.1%} |")
        if name.startswith("ours") and ratio < TARGET:
            misses.append(f"{name}: {ratio:.1%} of Gunicorn alone < {TARGET:.0%}")
    print()
    print("targets: met" if not misses else "targets: missed: " + "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
