"""Demo: a WSGI app under Gunicorn with the exporter, some traffic, /metrics.

Starts Gunicorn (4 sync workers) with the exporter's config on the demo app,
sends a mix of requests (some answered 404 and 503, some raising), and prints
where /metrics is served with an excerpt. Runs until Ctrl-C (or --seconds).

    python demo/run_demo.py [--port 8000] [--metrics-port 9091] [--seconds 0]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_for(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise SystemExit(f"nothing answers at {url}")


def get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=9091)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this (0: at Ctrl-C)")
    args = parser.parse_args()

    env = dict(os.environ, PROMETHEUS_METRICS_PORT=str(args.metrics_port), PROMETHEUS_BIND_ADDRESS="127.0.0.1",
               GUNICORN_PROMETHEUS_SAMPLE_INTERVAL="1")
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:gunicorn_prometheus_exporter.gunicorn_config",
         "--workers", "4", "--bind", f"127.0.0.1:{args.port}", "--chdir", str(HERE), "app:app"],
        env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    app = f"http://127.0.0.1:{args.port}"
    metrics = f"http://127.0.0.1:{args.metrics_port}/metrics"
    try:
        deadline = time.monotonic() + 20
        wait_for(app + "/", deadline)
        wait_for(metrics, deadline)
        paths = ["/"] * 40 + ["/missing"] * 5 + ["/fail"] * 3 + ["/boom"] * 2
        statuses = [get(app + path) for path in paths]
        time.sleep(1.5)  # one resource sample
        body = urllib.request.urlopen(metrics, timeout=5).read().decode()
        print(f"Gunicorn (4 workers) serves the demo app at {app}/")
        print(f"Sent {len(statuses)} requests: {statuses.count(200)} answered 200, "
              f"{sum(s >= 400 for s in statuses)} answered 4xx/5xx.\n")
        print(f"/metrics is served at {metrics}\n")
        print("excerpt:")
        wanted = ("gunicorn_worker_requests_total", "gunicorn_worker_failed_requests_total",
                  "gunicorn_worker_request_duration_seconds_count", "gunicorn_worker_memory_bytes",
                  "gunicorn_master_workers")
        for line in body.splitlines():
            if line.startswith(wanted) and not line.endswith(" 0.0"):
                print("  " + line)
        sys.stdout.flush()
        if args.seconds > 0:
            time.sleep(args.seconds)
        else:
            print("\nPress Ctrl-C to stop.")
            gunicorn.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            gunicorn.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
