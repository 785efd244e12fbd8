"""Demo: a WSGI app under Gunicorn with the exporter, some traffic, /metrics.

Starts Gunicorn (4 sync workers) with the exporter's config on the demo app,
sends a mix of requests (some answered 404, 503 and 500), waits until /metrics
has counted them, prints where /metrics is served with an excerpt, keeps
serving for --seconds (3) and stops; with --serve it runs until Ctrl-C.

Gunicorn runs in a process group of its own; the whole group (master,
workers, metrics agent) is stopped on every way out: the end, Ctrl-C, SIGTERM,
SIGHUP (the terminal closed), an error. A busy port stops the demo before
anything starts, naming the port.

    python demo/run_demo.py [--port 8000] [--metrics-port 9091] [--seconds 3 | --serve]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
WORKERS = 4
PATHS = ["/"] * 40 + ["/missing"] * 5 + ["/fail"] * 3 + ["/boom"] * 2  # 200, 404, 503, 500
EXCERPT = ("gunicorn_worker_requests_total", "gunicorn_worker_failed_requests_total",
           "gunicorn_worker_request_duration_seconds_count", "gunicorn_worker_memory_bytes",
           "gunicorn_master_workers")


class Stopped(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def check_free(port: int, what: str, flag: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Gunicorn binds
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise SystemExit(f"demo: port {port} ({what}) is busy: {e.strerror}; "
                             f"stop what listens there or choose another with {flag}") from None


def die_with_parent() -> None:
    """In the child: if the demo itself is killed, the kernel sends Gunicorn SIGTERM."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_gunicorn(args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PROMETHEUS_METRICS_PORT=str(args.metrics_port), PROMETHEUS_BIND_ADDRESS=HOST,
               GUNICORN_PROMETHEUS_SAMPLE_INTERVAL="1")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:gunicorn_prometheus_exporter.gunicorn_config",
             "--workers", str(WORKERS), "--bind", f"{HOST}:{args.port}", "--chdir", str(HERE), "app:app"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, preexec_fn=die_with_parent)


def wait_until_serving(gunicorn: subprocess.Popen[bytes], log: Path, args: argparse.Namespace) -> None:
    """Until Gunicorn and *our* agent say they listen (from their log, so that
    no request is sent before the counted ones); a port that turns out busy
    (taken after the check) fails here, named."""
    listening = (f"Listening at: http://{HOST}:{args.port}", f"on http://{HOST}:{args.metrics_port}/metrics")
    deadline = time.monotonic() + 30
    while True:
        text = log.read_text(errors="replace")
        if "Connection in use" in text:
            raise SystemExit(f"demo: port {args.port} (the app) is busy: Gunicorn cannot bind it")
        if "cannot listen on" in text:
            raise SystemExit(f"demo: port {args.metrics_port} (/metrics) is busy: the agent cannot bind it")
        if gunicorn.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"demo: Gunicorn did not start; its log:\n{text[-3000:]}")
        if all(line in text for line in listening):
            return
        time.sleep(0.1)


def get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def status_classes(statuses: list[int]) -> Counter[str]:
    return Counter(f"{s // 100}xx" for s in statuses)


def counted(body: str) -> Counter[str]:
    """gunicorn_worker_requests_total by status class."""
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "gunicorn_worker_requests_total":
                totals[sample.labels["status"]] += int(sample.value)
    return totals


def scrape_when_counted(metrics: str, sent: Counter[str]) -> str:
    """/metrics once it has counted what was sent and sampled every worker."""
    deadline = time.monotonic() + 15
    while True:
        body = urllib.request.urlopen(metrics, timeout=5).read().decode()
        seen = counted(body)
        if seen == sent and body.count("\ngunicorn_worker_memory_bytes{") == WORKERS:
            return body
        if seen.total() > sent.total() or time.monotonic() > deadline:
            raise SystemExit(f"demo: {metrics} counted {dict(+seen)}, the demo sent {dict(sent)}")
        time.sleep(0.2)


def stop_group(gunicorn: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Gunicorn's process group, SIGKILL to whatever is left after 15 s."""
    group = gunicorn.pid
    deadline = time.monotonic() + 15
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    while group_alive(group) and time.monotonic() < deadline:
        gunicorn.poll()  # reap the master
        time.sleep(0.05)
    if group_alive(group):
        os.killpg(group, signal.SIGKILL)
    gunicorn.wait()


def group_alive(group: int) -> bool:
    """A live (not zombie) process is in the group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="the app's port (8000)")
    parser.add_argument("--metrics-port", type=int, default=9091, help="the /metrics port (9091)")
    parser.add_argument("--seconds", type=float, default=3, help="keep serving this long after printing (3)")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C (or SIGTERM)")
    args = parser.parse_args()
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_stopped)

    check_free(args.port, "the app", "--port")
    check_free(args.metrics_port, "/metrics", "--metrics-port")
    app, metrics = f"http://{HOST}:{args.port}", f"http://{HOST}:{args.metrics_port}/metrics"
    with tempfile.TemporaryDirectory(prefix="gunicorn-demo-") as tmp:
        log = Path(tmp) / "gunicorn.log"
        gunicorn = start_gunicorn(args, log)
        try:
            wait_until_serving(gunicorn, log, args)
            sent = status_classes([get(app + path) for path in PATHS])
            body = scrape_when_counted(metrics, sent)
            print(f"Gunicorn ({WORKERS} workers) serves the demo app at {app}/")
            print(f"Sent {sent.total()} requests: {sent['2xx']} answered 2xx, {sent['4xx']} 4xx, "
                  f"{sent['5xx']} 5xx; /metrics counted the same.\n")
            print(f"/metrics is served at {metrics}\n")
            print("excerpt:")
            for line in body.splitlines():
                if line.startswith(EXCERPT) and not line.endswith(" 0.0"):
                    print("  " + line)
            print("\nServing until Ctrl-C." if args.serve else
                  f"\nServing for {args.seconds:g} s more (--serve: until Ctrl-C).", flush=True)
            try:
                code = gunicorn.wait(None if args.serve else args.seconds)
            except subprocess.TimeoutExpired:
                pass
            else:
                raise SystemExit(f"demo: Gunicorn exited by itself (code {code})")
        except Stopped as e:
            return 128 + e.signum
        finally:
            for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
            stop_group(gunicorn)
    print("Stopped Gunicorn and its metrics agent.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
