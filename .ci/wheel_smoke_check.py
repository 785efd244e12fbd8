"""Runs inside the minimal Debian root (.ci/wheel-smoke.sh), with the python of
a fresh venv where only the wheel was installed: README's "With Gunicorn"
lines, then HTTPS, gzip and the Redis mirror, with exact request counts read
from /metrics. Standard library only (no curl in the root).

    python wheel_smoke_check.py --redis-port P --certs DIR --work DIR
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

APP = '''
def app(environ, start_response):
    body = b"hello from the wheel smoke test\\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None,
        data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def requests_total(text: str, method: str) -> float:
    """gunicorn_worker_requests_total{method=...,status="2xx"}, 0 if absent."""
    for line in text.splitlines():
        if line.startswith("gunicorn_worker_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.index("}")]))
            if labels.get("method") == method and labels.get("status") == "2xx":
                return float(line.rsplit(" ", 1)[1])
    return 0.0


class Gunicorn:
    def __init__(self, work: Path, env: dict[str, str], name: str) -> None:
        self.port = free_port()
        self.log = open(work / f"{name}.log", "wb")
        # README: gunicorn -c python:gunicorn_prometheus_exporter.gunicorn_config -w 4 app:app
        # (bound to a free loopback port instead of Gunicorn's default 8000).
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:gunicorn_prometheus_exporter.gunicorn_config",
             "-w", "4", "-b", f"127.0.0.1:{self.port}", "app:app"],
            cwd=work, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.name = name
        self.work = work

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def output(self) -> str:
        return (self.work / f"{self.name}.log").read_text(errors="replace")[-3000:]


def exact_count(scrape: Callable[[], str], method: str, expected: int, where: str) -> None:
    wait_for(f"{expected} {method} requests on {where}", lambda: requests_total(scrape(), method) >= expected)
    time.sleep(0.5)
    got = requests_total(scrape(), method)
    assert got == expected, f"{where}: {got} {method} requests counted, {expected} made"
    print(f"   {where}: exactly {expected} {method} requests counted")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    (work / "app.py").write_text(APP)
    base = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}

    # 1. README's "With Gunicorn" lines, plain HTTP.
    metrics_port = free_port()
    env = dict(base, PROMETHEUS_METRICS_PORT=str(metrics_port), PROMETHEUS_BIND_ADDRESS="127.0.0.1")
    g = Gunicorn(work, env, "plain")
    try:
        wait_for("Gunicorn", lambda: get(f"http://127.0.0.1:{g.port}/")[0] == 200)
        wait_for("the agent's /health", lambda: get(f"http://127.0.0.1:{metrics_port}/health")[0] == 200)
        for _ in range(36):  # one more GET was made by the wait above
            assert get(f"http://127.0.0.1:{g.port}/")[0] == 200
        for _ in range(5):
            assert get(f"http://127.0.0.1:{g.port}/", data=b"x=1")[0] == 200

        def plain() -> str:
            return get(f"http://127.0.0.1:{metrics_port}/metrics")[2].decode()

        exact_count(plain, "GET", 37, "/metrics (HTTP)")
        exact_count(plain, "POST", 5, "/metrics (HTTP)")
        text = plain()
        assert re.search(r"^gunicorn_master_workers 4(\.0)?$", text, re.M), "gunicorn_master_workers is not 4"
        print("   gunicorn_master_workers 4")
    except BaseException:
        print(g.output(), file=sys.stderr)
        raise
    finally:
        g.stop()

    # 2. HTTPS (certificates made on the host), gzip, Redis mirror to the
    #    redis-server outside the root; read back by the agent as a sidecar.
    metrics_port = free_port()
    prefix = f"wheelsmoke{os.getpid()}"
    env = dict(base, PROMETHEUS_METRICS_PORT=str(metrics_port), PROMETHEUS_BIND_ADDRESS="127.0.0.1",
               PROMETHEUS_SSL_CERTFILE=str(args.certs / "server.pem"),
               PROMETHEUS_SSL_KEYFILE=str(args.certs / "server.key"),
               REDIS_ENABLED="true", REDIS_HOST="127.0.0.1", REDIS_PORT=str(args.redis_port),
               REDIS_KEY_PREFIX=prefix, REDIS_INSTANCE_ID="wheel-smoke", REDIS_FLUSH_INTERVAL="0.2")
    context = ssl.create_default_context(cafile=str(args.certs / "ca.pem"))
    g = Gunicorn(work, env, "tls-redis")
    sidecar = None
    try:
        wait_for("Gunicorn", lambda: get(f"http://127.0.0.1:{g.port}/")[0] == 200)
        for _ in range(22):
            assert get(f"http://127.0.0.1:{g.port}/")[0] == 200

        def tls() -> str:
            status, headers, body = get(f"https://127.0.0.1:{metrics_port}/metrics", context,
                                        {"Accept-Encoding": "gzip"})
            assert status == 200
            assert headers.get("content-encoding") == "gzip", f"no gzip: {headers}"
            return gzip.decompress(body).decode()

        exact_count(tls, "GET", 23, "/metrics (HTTPS, gzip)")
        try:
            answered = get(f"http://127.0.0.1:{metrics_port}/metrics")[0]
        except Exception:  # reset, closed or not HTTP: refused
            answered = None
        assert answered is None, f"plain HTTP was answered ({answered}) on the HTTPS port"
        print("   plain HTTP refused on the HTTPS port")

        sidecar_port = free_port()
        sidecar_log = open(work / "sidecar.log", "wb")
        sidecar = subprocess.Popen(
            [str(BIN / "gunicorn-prometheus-agent"), "--source", "redis", "--bind", "127.0.0.1",
             "--port", str(sidecar_port), "--redis-url", f"redis://127.0.0.1:{args.redis_port}/0",
             "--redis-prefix", prefix], env=base, stdout=sidecar_log, stderr=subprocess.STDOUT)

        def from_redis() -> str:
            return get(f"http://127.0.0.1:{sidecar_port}/metrics")[2].decode()

        exact_count(from_redis, "GET", 23, "sidecar /metrics (from Redis)")
    except BaseException:
        print(g.output(), file=sys.stderr)
        if sidecar is not None:
            print((work / "sidecar.log").read_text(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        if sidecar is not None:
            sidecar.terminate()
            sidecar.wait(10)
        g.stop()
    print(f"REDIS_PREFIX={prefix}")


if __name__ == "__main__":
    main()
