"""Benchmark: scrape latency under slowloris, per HTTP server model.

Why the agent serves HTTP from its own epoll loop: each candidate serves the
same /metrics body on loopback, first alone and then while N connections
trickle one header line per second (never finishing their request head).
Printed: p50/p99 of /metrics alone and under slowloris, their ratios, and how
many scrapes failed (timed out at 2 s or refused), plus two other hostile
probes: a 50-range `Range` request (bytes answered against the body), 3
pipelined requests in one write (answers, seconds), and when a client that
sends a byte of its head every 0.5 s is closed (a total deadline closes it,
a timeout restarted by every byte never does).

Candidates (a throwaway C++ harness per library, built here with g++ from
Debian's packages; a library whose headers are missing is skipped):

* cpp-httplib 0.11 (libcpp-httplib-dev), as the agent used it: thread pool of
  8, read timeout 5 s per recv, listen backlog 5
* cpp-httplib with 1,100 threads (the one knob that could carry 1,000
  trickling clients: a thread each)
* libmicrohttpd 0.9.75 (libmicrohttpd-dev), event-driven: one epoll thread,
  4,096 connections, 10 s idle timeout, backlog 1,024
* CivetWeb 1.15 (libcivetweb-dev; prometheus-cpp's exposer), a worker thread
  per connection: its default 50 threads (prometheus-cpp's default is 2), and
  1,100; request timeout 10 s, backlog 1,024
* the agent (this repository's gunicorn-prometheus-agent, its epoll loop),
  serving a multiprocess directory of about the same size

Every phase is bounded: at most 200 scrapes or 15 s, stopped after 5
consecutive failures.

    python bench/bench_http_slowloris.py [--connections 1000] [--quick]

With --connections above 1,100 the servers with a thread per connection run
out of threads again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from timing import print_table  # noqa: E402

HOST = "127.0.0.1"
SCRAPE_TIMEOUT = 2.0
BODY_LINES = 2000  # ~150 KB of exposition text

HTTPLIB_HARNESS = r"""
#include <httplib.h>
#include <cstdlib>
#include <string>
int main(int argc, char** argv) {
    const int port = std::atoi(argv[1]);
    const size_t lines = std::strtoul(argv[2], nullptr, 10);
    const int threads = std::atoi(argv[3]);
    std::string body;
    for (size_t i = 0; i < lines; ++i)
        body += "hostile_requests_total{path=\"/path/number/" + std::to_string(i) + "\",code=\"200\"} " + std::to_string(i) + ".0\n";
    httplib::Server server;
    if (threads > 0) server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server.Get("/metrics", [&](const httplib::Request&, httplib::Response& r) { r.set_content(body, "text/plain; version=0.0.4"); });
    server.Get("/health", [](const httplib::Request&, httplib::Response& r) { r.set_content("ok\n", "text/plain"); });
    return server.listen("127.0.0.1", port) ? 0 : 1;
}
"""

MHD_HARNESS = r"""
#include <microhttpd.h>
#include <signal.h>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <string>
static std::string body;
static MHD_Result handle(void*, MHD_Connection* c, const char* url, const char*, const char*, const char*, size_t*, void** state) {
    static int marker;
    if (*state == nullptr) { *state = &marker; return MHD_YES; }  // headers only so far
    const bool metrics = std::strcmp(url, "/metrics") == 0;
    MHD_Response* r = metrics ? MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_PERSISTENT)
                              : MHD_create_response_from_buffer(3, (void*)"ok\n", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", metrics ? "text/plain; version=0.0.4" : "text/plain");
    const MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}
int main(int argc, char** argv) {
    const unsigned port = std::atoi(argv[1]);
    const size_t lines = std::strtoul(argv[2], nullptr, 10);
    for (size_t i = 0; i < lines; ++i)
        body += "hostile_requests_total{path=\"/path/number/" + std::to_string(i) + "\",code=\"200\"} " + std::to_string(i) + ".0\n";
    MHD_Daemon* d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, port, nullptr, nullptr, &handle, nullptr,
                                     MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                     MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (d == nullptr) return 1;
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGTERM); sigaddset(&s, SIGINT);
    pthread_sigmask(SIG_BLOCK, &s, nullptr);
    int sig; sigwait(&s, &sig);
    MHD_stop_daemon(d);
    return 0;
}
"""

CIVETWEB_HARNESS = r"""
#include <civetweb.h>
#include <signal.h>
#include <cstdlib>
#include <string>
static std::string body;
static int metrics(mg_connection* c, void*) {
    mg_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n\r\n", body.size());
    mg_write(c, body.data(), body.size());
    return 200;
}
static int health(mg_connection* c, void*) {
    mg_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n");
    return 200;
}
int main(int argc, char** argv) {
    const std::string port = std::string("127.0.0.1:") + argv[1];
    const size_t lines = std::strtoul(argv[2], nullptr, 10);
    for (size_t i = 0; i < lines; ++i)
        body += "hostile_requests_total{path=\"/path/number/" + std::to_string(i) + "\",code=\"200\"} " + std::to_string(i) + ".0\n";
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGTERM); sigaddset(&s, SIGINT);
    pthread_sigmask(SIG_BLOCK, &s, nullptr);
    mg_init_library(0);
    const char* options[] = {"listening_ports", port.c_str(), "num_threads", argv[3], "request_timeout_ms", "10000",
                             "enable_keep_alive", "yes", "listen_backlog", "1024", nullptr};
    mg_callbacks callbacks{};
    mg_context* ctx = mg_start(&callbacks, nullptr, options);
    if (ctx == nullptr) return 1;
    mg_set_request_handler(ctx, "/metrics", metrics, nullptr);
    mg_set_request_handler(ctx, "/health", health, nullptr);
    int sig; sigwait(&s, &sig);
    mg_stop(ctx);
    return 0;
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build(name: str, source: str, packages: list[str], libs: tuple[str, ...] = ()) -> Path | None:
    """Compiles a harness once (cached by its source) into build/bench;
    packages are pkg-config names, or a header path for a library without one."""
    headers = [p for p in packages if p.startswith("/")]
    packages = [p for p in packages if not p.startswith("/")]
    if (
        packages
        and subprocess.run(["pkg-config", "--exists", *packages], check=False).returncode != 0
    ) or not all(Path(h).exists() for h in headers):
        print(f"({name}: no {' '.join(packages + headers)}; skipped)")
        return None
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    binary = out_dir / f"{name}-{digest}"
    if binary.exists():
        return binary
    src = out_dir / f"{name}.cpp"
    src.write_text(source)
    flags = list(libs)
    if packages:
        flags += subprocess.run(
            ["pkg-config", "--cflags", "--libs", *packages],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    print(f"(building the {name} harness)", flush=True)
    subprocess.run(
        ["g++", "-O2", "-std=c++20", "-pthread", str(src), "-o", str(binary), *flags], check=True
    )
    return binary


def write_directory(directory: Path, series: int) -> None:
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    directory.mkdir(parents=True, exist_ok=True)
    values = MmapedDict(str(directory / "counter_4242.db"))
    try:
        for i in range(series):
            key = mmap_key(
                "hostile_requests_total",
                "hostile_requests_total",
                ["path", "code"],
                [f"/path/number/{i}", "200"],
                "Requests by path.",
            )
            values.write_value(key, float(i), 0.0)
    finally:
        values.close()


def request(port: int, data: bytes, timeout: float) -> bytes:
    """Sends one request with Connection: close; returns the whole answer."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def scrape_latencies(port: int, count: int, budget: float) -> tuple[list[float], int]:
    """Latencies of successful scrapes, and failures; bounded in count and time."""
    latencies: list[float] = []
    failures = consecutive = 0
    until = time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > until or consecutive >= 5:
            break
        started = time.perf_counter()
        try:
            answer = request(port, SCRAPE, SCRAPE_TIMEOUT)
            ok = answer.startswith(b"HTTP/1.1 200") and b"hostile_requests_total" in answer
        except OSError:
            ok = False
        elapsed = time.perf_counter() - started
        if ok:
            latencies.append(elapsed)
            consecutive = 0
        else:
            failures += 1
            consecutive += 1
    return latencies, failures


class Trickle:
    """N connections that each send a header line per second, never ending the head."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.socks: list[socket.socket] = []
        self.refused = 0
        for _ in range(count):
            try:
                s = socket.create_connection((HOST, port), timeout=2)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                self.socks.append(s)
            except OSError:
                self.refused += 1
        self.stop = threading.Event()
        self.seconds = seconds
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        n = 0
        started = time.monotonic()
        while not self.stop.wait(1.0) and time.monotonic() - started < self.seconds:
            for s in self.socks:
                try:
                    s.setblocking(False)
                    s.send(b"X-Trickle-%d: 1\r\n" % n)
                except OSError:
                    pass
            n += 1

    def open_count(self) -> int:
        alive = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                alive += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def range_probe(port: int) -> str:
    full = len(request(port, SCRAPE, 5))
    ranges = ",".join(["0-"] * 50)
    try:
        answer = request(
            port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nRange: bytes="
            + ranges.encode()
            + b"\r\nConnection: close\r\n\r\n",
            10,
        )
    except OSError as e:
        return f"error {e.__class__.__name__}"
    return f"{len(answer) / full:.1f}x"


def pipeline_probe(port: int) -> str:
    data = (
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2
        + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    started = time.monotonic()
    try:
        answer = request(port, data, 8)
    except OSError:
        answer = b""
    return f"{answer.count(b'HTTP/1.1 200')}/3 in {time.monotonic() - started:.1f} s"


def deadline_probe(port: int, limit: float) -> str:
    """When a client that sends one byte of its head every 0.5 s is closed
    (a per-byte timeout never closes it; a total deadline does)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        while time.monotonic() - started < limit:
            try:
                s.sendall(b"X")
                s.setblocking(False)
                try:
                    if s.recv(1024, socket.MSG_PEEK) == b"":
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            except OSError:
                break
            time.sleep(0.5)
    elapsed = time.monotonic() - started
    return f"> {limit:.0f} s (open)" if elapsed >= limit else f"{elapsed:.1f} s"


def ms(values: list[float], q: int) -> str:
    if not values:
        return "-"
    if len(values) < 2:
        return f"{values[0] * 1000:.1f}"
    return f"{statistics.quantiles(values, n=100)[q - 1] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="50 scrapes per phase")
    args = parser.parse_args()
    count = 50 if args.quick else 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 500)), hard))

    from gunicorn_prometheus_exporter import agent as agent_module

    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    write_directory(tmp / "mp", BODY_LINES)
    candidates: list[tuple[str, list[str]]] = []
    httplib = build("httplib", HTTPLIB_HARNESS, ["cpp-httplib", "openssl", "zlib"])
    if httplib:
        candidates.append(
            (
                "cpp-httplib, 8 threads (the agent before)",
                [str(httplib), "{port}", str(BODY_LINES), "0"],
            )
        )
        candidates.append(
            ("cpp-httplib, 1,100 threads", [str(httplib), "{port}", str(BODY_LINES), "1100"])
        )
    mhd = build("mhd", MHD_HARNESS, ["libmicrohttpd"])
    if mhd:
        candidates.append(("libmicrohttpd, epoll thread", [str(mhd), "{port}", str(BODY_LINES)]))
    civetweb = build("civetweb", CIVETWEB_HARNESS, ["/usr/include/civetweb.h"], ("-lcivetweb",))
    if civetweb:
        candidates.append(
            ("CivetWeb, 50 threads", [str(civetweb), "{port}", str(BODY_LINES), "50"])
        )
        candidates.append(
            ("CivetWeb, 1,100 threads", [str(civetweb), "{port}", str(BODY_LINES), "1100"])
        )
    candidates.append(
        (
            "agent (own epoll loop)",
            [
                str(agent_module.BINARY),
                "--directory",
                str(tmp / "mp"),
                "--bind",
                HOST,
                "--port",
                "{port}",
            ],
        )
    )

    rows = []
    try:
        for name, command in candidates:
            port = free_port()
            proc = subprocess.Popen(
                [part.replace("{port}", str(port)) for part in command],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        request(port, SCRAPE, 1)
                        break
                    except OSError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError(f"{name} did not start") from None
                        time.sleep(0.05)
                alone, alone_failed = scrape_latencies(port, count, 15)
                pipelined = pipeline_probe(port)
                rss = rss_mb(proc.pid)
                ranged = range_probe(port)
                rss_range = rss_mb(proc.pid) - rss
                deadline_closed = deadline_probe(port, 14)
                trickle = Trickle(port, args.connections, 25)
                try:
                    time.sleep(1.5)
                    loaded, loaded_failed = scrape_latencies(port, count, 15)
                    held = trickle.open_count()
                finally:
                    trickle.close()
                    rss_loaded = rss_mb(proc.pid)
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            ratio50 = (
                (statistics.median(loaded) / statistics.median(alone)) if loaded and alone else None
            )
            ratio99 = None
            if len(loaded) > 1 and len(alone) > 1:
                ratio99 = (
                    statistics.quantiles(loaded, n=100)[98] / statistics.quantiles(alone, n=100)[98]
                )
            rows.append(
                [
                    name,
                    ms(alone, 50),
                    ms(alone, 99),
                    ms(loaded, 50),
                    ms(loaded, 99),
                    f"{ratio50:.2f}x" if ratio50 else "-",
                    f"{ratio99:.2f}x" if ratio99 else "-",
                    f"{loaded_failed}/{loaded_failed + len(loaded)}"
                    + (f" (+{alone_failed} alone)" if alone_failed else ""),
                    f"{held}/{args.connections}",
                    f"{rss_loaded:.0f}",
                    ranged,
                    f"{rss_range:+.0f}",
                    pipelined,
                    deadline_closed,
                ]
            )
            print(f"{name}: done", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n/metrics ({BODY_LINES} series, ~150 KB) alone and with {args.connections:,} connections "
        f"trickling a header line per second; ms; a scrape fails at {SCRAPE_TIMEOUT:.0f} s\n"
    )
    print_table(
        [
            "server",
            "p50 alone",
            "p99 alone",
            "p50 slowloris",
            "p99 slowloris",
            "p50 ratio",
            "p99 ratio",
            "scrapes failed",
            "trickling held",
            "RSS MB",
            "50-range answer",
            "RSS MB by Range",
            "3 pipelined",
            "byte per 0.5 s closed after",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
