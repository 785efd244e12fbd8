"""Real Gunicorn processes for the end-to-end tests (tests/test_gunicorn_*.py).

``Gunicorn`` starts ``python -m gunicorn -c python:gunicorn_prometheus_exporter.gunicorn_config``
in its own process group on free loopback ports, with its output in a file,
and kills the whole group when stopped. Helpers scrape /metrics with real HTTP
and parse it with prometheus_client's parser; ``wait_for`` polls with a
deadline instead of sleeping.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "demo"
CONFIG = "python:gunicorn_prometheus_exporter.gunicorn_config"
AGENT_NAME = "gunicorn-prometheus-agent"

T = TypeVar("T")


def agent_binary() -> Path:
    from gunicorn_prometheus_exporter import agent

    return Path(agent.BINARY)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Calls predicate until it returns something true (returned) or the
    deadline passes (AssertionError). Exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # not ready yet
            last_error = e
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"timed out after {timeout}s waiting for {text}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


# ------------------------------------------------------------------ HTTP ----


def http_get(
    port: int,
    path: str = "/",
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends bytes on a raw socket and returns all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def scrape_text(
    port: int,
    scheme: str = "http",
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> str:
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        data = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data.decode()


Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    )


def labelled(
    samples: Iterable[Sample], name: str, **labels: str
) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(ls.items())): v
        for n, ls, v in samples
        if n == name and all(ls.get(k) == w for k, w in labels.items())
    }


def pids_of(samples: Iterable[Sample], name: str) -> set[int]:
    return {int(ls["pid"]) for n, ls, _ in samples if n == name and "pid" in ls}


LIVEALL = (
    "gunicorn_worker_memory_bytes",
    "gunicorn_worker_cpu_percent",
    "gunicorn_worker_uptime_seconds",
    "gunicorn_worker_open_fds",
    "gunicorn_worker_threads",
    "gunicorn_worker_state",
)


# ------------------------------------------------------------- processes ----


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command may contain spaces and parentheses: fields after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return [
            a.decode(errors="replace")
            for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if a
        ]
    except OSError:
        return []


def is_agent(pid: int) -> bool:
    args = cmdline(pid)
    return bool(args) and os.path.basename(args[0]) == AGENT_NAME


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


class Gunicorn:
    """One real Gunicorn master with the exporter, its workers and its agent."""

    def __init__(
        self,
        tmp: Path,
        workers: int = 2,
        worker_class: str | None = "sync",
        app: str = "app:app",
        chdir: Path | str = DEMO_DIR,
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        metrics_port: int | None = None,
        wait_ready: bool = True,
        name: str = "gunicorn",
        config: str | None = CONFIG,
    ) -> None:
        self.tmp = Path(tmp)
        self.workers = workers
        self.port = free_port()
        self.metrics_port = metrics_port if metrics_port is not None else free_port()
        self.log_path = self.tmp / f"{name}-{self.port}.log"
        self.env = clean_env()
        self.env.update(
            {
                "PROMETHEUS_METRICS_PORT": str(self.metrics_port),
                "PROMETHEUS_BIND_ADDRESS": "127.0.0.1",
                "GUNICORN_PROMETHEUS_SAMPLE_INTERVAL": "0.2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env or {})
        self.args = [
            sys.executable,
            "-m",
            "gunicorn",
            *(["-c", config] if config else []),
            "-w",
            str(workers),
            *(["-k", worker_class] if worker_class else []),
            "-b",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(chdir),
            "--no-control-socket",
            "--graceful-timeout",
            "1",
            *extra_args,
            app,
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        if wait_ready:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise

    # -- lifecycle --
    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_serving(self, timeout: float = 20.0) -> None:
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        wait_for(serving, timeout, message=lambda: f"gunicorn to listen:\n{self.log()}")

    def wait_ready(self, timeout: float = 20.0) -> list[Sample]:
        """Listening, /metrics up, every worker's gauges there."""
        self.wait_serving(timeout)
        return wait_for(
            lambda: self._ready_samples(),
            timeout,
            message=lambda: f"{self.workers} workers on /metrics:\n{self.log()}",
        )

    def _ready_samples(self) -> list[Sample] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        samples = self.samples()
        pids = set(self.worker_pids())
        # (the master's own pid may show up too: checked by a test of its own)
        if len(pids) == self.workers and pids <= pids_of(samples, "gunicorn_worker_memory_bytes"):
            return samples
        return None

    def stop(self) -> None:
        """TERM the master (graceful), then KILL the whole process group."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(8)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._log.close()
            self._remove_private_directories()

    def _remove_private_directories(self) -> None:
        """A master killed with SIGKILL cannot remove its private directory:
        the test does (only directories this instance's agent named)."""
        for match in set(
            re.findall(r"serving (/dev/shm/gunicorn-prometheus-[^/\s]+) on", self.log())
        ):
            shutil.rmtree(match, ignore_errors=True)

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes --
    def worker_pids(self) -> list[int]:
        return [p for p in children(self.pid) if not is_agent(p)]

    def agent_pids(self) -> list[int]:
        return [p for p in children(self.pid) if is_agent(p)]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    # -- HTTP --
    def get(self, path: str = "/", **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.port, path, **kw)

    def status(self, path: str = "/", **kw: Any) -> int:
        return self.get(path, **kw)[0]

    def scrape(self, **kw: Any) -> str:
        return scrape_text(self.metrics_port, **kw)

    def samples(self, **kw: Any) -> list[Sample]:
        return parse(self.scrape(**kw))

    def wait_metrics(
        self, predicate: Callable[[list[Sample]], Any], timeout: float = 5.0, what: str = "metrics"
    ) -> list[Sample]:
        """Scrapes until predicate(samples) is true; returns those samples."""
        last: list[list[Sample]] = [[]]

        def check() -> list[Sample] | None:
            samples = self.samples()
            last[0] = samples
            return samples if predicate(samples) else None

        def message() -> str:
            shown = "\n".join(
                f"  {n}{ls} {v}"
                for n, ls, v in last[0]
                if v and not n.endswith(("_bucket", "_created"))
            )
            return f"{what}; last scrape (non-zero):\n{shown}\n--- gunicorn log tail:\n{self.log()[-3000:]}"

        return wait_for(check, timeout, message=message)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting of the exporter."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROMETHEUS_", "REDIS_", "GUNICORN_"))
    }
    env.update(extra)
    return env


class Agent:
    """The agent binary run by hand (a sidecar), on a free loopback port, in
    its own process group."""

    def __init__(
        self, tmp: Path, args: Iterable[str], env: dict[str, str] | None = None, name: str = "agent"
    ) -> None:
        self.port = free_port()
        self.log_path = Path(tmp) / f"{name}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(agent_binary()), *args, "--bind", "127.0.0.1", "--port", str(self.port)],
            env=clean_env(**(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def samples(self) -> list[Sample]:
        if self.proc.poll() is not None:
            raise AssertionError(f"the agent exited with {self.proc.returncode}:\n{self.log()}")
        return parse(scrape_text(self.port))

    def wait_requests(self, ok: int, missing: int, timeout: float = 30) -> None:
        """Until the agent shows exactly `ok` 2xx and `missing` 4xx requests."""

        def exact(samples: list[Sample]) -> bool:
            return (
                value(samples, "gunicorn_worker_requests_total", status="2xx") == ok
                and value(samples, "gunicorn_worker_requests_total", status="4xx") == missing
            )

        self.wait_metrics(exact, timeout, what=f"{ok} 2xx and {missing} 4xx")

    def wait_metrics(
        self, predicate: Callable[[list[Sample]], Any], timeout: float = 5.0, what: str = "metrics"
    ) -> list[Sample]:
        last: list[list[Sample]] = [[]]

        def check() -> list[Sample] | None:
            last[0] = self.samples()
            return last[0] if predicate(last[0]) else None

        def message() -> str:
            shown = "\n".join(
                f"  {n}{ls} {v}"
                for n, ls, v in last[0]
                if v and not n.endswith(("_bucket", "_created"))
            )
            return f"{what}; last scrape (non-zero):\n{shown}\n--- agent log:\n{self.log()[-2000:]}"

        return wait_for(check, timeout, message=message)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ Redis ----


def redis_command(port: int, *args: str, password: str | None = None) -> Any:
    """One command over RESP (no client library needed)."""

    def encode(parts: Iterable[str]) -> bytes:
        parts = list(parts)
        out = [f"*{len(parts)}\r\n".encode()]
        for p in parts:
            b = p.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")

        def read() -> Any:
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:]
            if kind == b"+":
                return rest.decode()
            if kind == b"-":
                raise RuntimeError(rest.decode())
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data.decode(errors="replace")
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError(f"unexpected reply {line!r}")

        if password:
            s.sendall(encode(["AUTH", password]))
            read()
        s.sendall(encode(args))
        return read()


def tls_files(directory: Path) -> dict[str, str]:
    """CA, server (127.0.0.1) and client certificates made with openssl."""
    from redis_server import make_tls_files

    return make_tls_files(directory)


def open_error_types() -> tuple[type[BaseException], ...]:
    return (
        ssl.SSLError,
        ConnectionError,
        urllib.error.URLError,
        http.client.HTTPException,
        OSError,
    )
