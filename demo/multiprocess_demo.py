"""Demo: worker processes record metrics natively; one endpoint serves them.

Four forked workers simulate requests with prometheus_client's API (their
values go through the C++ core into memory-mapped files); the parent serves
the merged view on http://127.0.0.1:9091/metrics, rendered by the core. One
worker is restarted midway, as Gunicorn would, and marked dead: its counts
move to the archive and the totals keep growing.

    python demo/multiprocess_demo.py [--port 9091] [--seconds 0 (forever)]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKERS = 4


def worker_loop(stop_after: float) -> None:
    from prometheus_client import Counter, Gauge, Histogram

    requests = Counter("demo_requests", "Requests handled", ["method", "status"])
    latency = Histogram("demo_request_duration_seconds", "Request latency", ["method"])
    in_flight = Gauge("demo_in_flight", "Requests in progress", multiprocess_mode="livesum")
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        method = random.choice(["GET", "GET", "GET", "POST"])
        status = random.choice(["200"] * 18 + ["404", "500"])
        in_flight.inc()
        duration = random.expovariate(40)
        time.sleep(min(duration, 0.05))
        requests.labels(method, status).inc()
        latency.labels(method).observe(duration)
        in_flight.dec()
    os._exit(0)


def spawn_worker(stop_after: float) -> int:
    pid = os.fork()
    if pid == 0:
        worker_loop(stop_after)
    return pid


class MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        from gunicorn_prometheus_exporter import render_directory

        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        openmetrics = "application/openmetrics-text" in self.headers.get("Accept", "")
        body = render_directory(openmetrics=openmetrics)
        content_type = (
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
            if openmetrics
            else "text/plain; version=0.0.4; charset=utf-8"
        )
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "9091")))
    parser.add_argument("--seconds", type=float, default=0, help="stop after this (0: never)")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="gpe-demo-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    import gunicorn_prometheus_exporter as exporter  # enables native values

    server = ThreadingHTTPServer(("127.0.0.1", args.port), MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{args.port}/metrics"

    workers = [spawn_worker(stop_after=3600) for _ in range(WORKERS)]
    time.sleep(1.5)
    # Restart one worker, as Gunicorn does after max_requests or a crash.
    victim = workers.pop(0)
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    exporter.mark_process_dead(victim)
    workers.append(spawn_worker(stop_after=3600))
    time.sleep(0.5)

    body = urllib.request.urlopen(url, timeout=5).read().decode()
    print(f"metrics directory: {directory}")
    print(f"workers: {workers} (one restarted: {victim}, its counts archived)")
    print(f"\n/metrics is served at {url}\n")
    print("excerpt:")
    for line in body.splitlines():
        if line.startswith(("demo_requests_total", "demo_in_flight", "# TYPE demo_requests")):
            print("  " + line)
    sys.stdout.flush()

    try:
        if args.seconds > 0:
            time.sleep(args.seconds)
        else:
            print("\nPress Ctrl-C to stop.")
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        server.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
