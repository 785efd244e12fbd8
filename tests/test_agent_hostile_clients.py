"""The agent's HTTP endpoint against hostile clients, one test per probe: the
real agent binary on loopback, real sockets, every loop bounded in count and
time.

- slowloris: 1,000 connections trickling a header line per second are held
  while /metrics and /health are scraped (p99 under 100 ms);
- Range is ignored on /metrics (whole bodies only);
- pipelined requests are answered in order;
- oversized heads are refused (431) and bodies on GET (413) without the
  agent's memory growing;
- idle and trickling connections are closed at the request deadline, which
  is a total for the whole request, not per byte.
"""

from __future__ import annotations

import http.client
import resource
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gunicorn_runner import Agent, parse, wait_for

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

HOST = "127.0.0.1"


def write_directory(directory: Path, series: int) -> None:
    """A multiprocess directory of one process with `series` counters."""
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


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    write_directory(tmp_path / "mp", 2000)
    with Agent(tmp_path, ["--directory", str(tmp_path / "mp")]) as a:
        wait_for(lambda: a.samples(), 10, message=lambda: f"the agent serving:\n{a.log()}")
        yield a


def get(
    port: int, path: str = "/metrics", headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_all(sock: socket.socket, deadline: float) -> bytes:
    """Reads until the peer closes or the deadline passes."""
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def split_responses(
    data: bytes, head_only: frozenset[int] = frozenset()
) -> list[tuple[int, bytes]]:
    """Splits HTTP/1.1 responses framed by Content-Length (the answers at
    the positions in head_only answer HEAD: no body)."""
    out: list[tuple[int, bytes]] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete response: {data[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines[1:]
            if line.lower().startswith(b"content-length:")
        )
        if len(out) in head_only:
            length = 0
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


def open_many(port: int, count: int) -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((HOST, port), timeout=5))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def test_slowloris_1000_trickling_connections_do_not_starve_scrapes(agent: Agent) -> None:
    # the listen backlog (Send-Q of a listening socket) holds bursts of connects
    listing = subprocess.run(
        ["ss", "-Hltn", f"sport = :{agent.port}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if listing:
        assert int(listing[2]) >= 128, listing
    baseline = []
    for _ in range(30):
        started = time.perf_counter()
        assert get(agent.port)[0] == 200
        baseline.append(time.perf_counter() - started)

    socks = open_many(agent.port, 1000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def trickle() -> None:
        # one header line per second on each connection, never the end of the head
        try:
            for s in socks:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            for n in range(8):
                if stop.wait(1.0):
                    return
                for s in socks:
                    s.sendall(b"X-Trickle-%d: 1\r\n" % n)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.2)  # every connection has started its request
        latencies = []
        health = []
        until = time.monotonic() + 4.0
        for _ in range(200):
            if time.monotonic() > until:
                break
            started = time.perf_counter()
            status, _, body = get(agent.port, timeout=5)
            latencies.append(time.perf_counter() - started)
            assert status == 200 and b"hostile_requests_total" in body
            started = time.perf_counter()
            assert get(agent.port, "/health", timeout=5)[:1] == (200,)
            health.append(time.perf_counter() - started)
        still_open = sum(not closed_by_peer(s) for s in socks)
    finally:
        stop.set()
        trickler.join(10)
        for s in socks:
            s.close()
    assert not errors, errors
    assert len(latencies) >= 20
    p99 = statistics.quantiles(latencies, n=100)[98]
    health_p99 = statistics.quantiles(health, n=100)[98]
    print(
        f"\n/metrics p50 {statistics.median(baseline) * 1000:.1f} ms alone, "
        f"{statistics.median(latencies) * 1000:.1f} ms (p99 {p99 * 1000:.1f} ms) "
        f"with 1,000 trickling connections; /health p99 {health_p99 * 1000:.1f} ms"
    )
    assert p99 < 0.1, f"p99 {p99 * 1000:.1f} ms"
    assert health_p99 < 0.1, f"/health p99 {health_p99 * 1000:.1f} ms"
    # the hostile connections were held (not refused) while the scrapes ran
    assert still_open >= 990, still_open


def test_range_header_is_ignored(tmp_path: Path) -> None:
    write_directory(tmp_path / "mp", 20000)  # about 1.3 MB of text
    with Agent(tmp_path, ["--directory", str(tmp_path / "mp")]) as a:
        wait_for(lambda: a.samples(), 10, message=lambda: f"the agent serving:\n{a.log()}")
        status, _, full = get(a.port)
        assert status == 200 and len(full) > 1_000_000
        rss = rss_bytes(a.proc.pid)
        ranges = "bytes=" + ",".join(["0-"] * 50)
        for header in (ranges, "bytes=0-99", "bytes=100-200,300-400"):
            status, headers, body = get(a.port, headers={"Range": header})
            assert status == 200, (header, status)
            assert "content-range" not in headers
            assert len(body) == int(headers["content-length"]) == len(full)
            assert parse(body.decode())
        assert rss_bytes(a.proc.pid) < rss + 20 * 1024 * 1024


def test_pipelined_requests_are_answered_in_order(agent: Agent) -> None:
    with socket.create_connection((HOST, agent.port), timeout=5) as s:
        s.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        started = time.monotonic()
        data = read_all(s, started + 5)
        elapsed = time.monotonic() - started
    answers = split_responses(data, head_only=frozenset({3}))
    assert [status for status, _ in answers] == [200, 200, 404, 200, 200]
    assert answers[0][1] == b"ok\n"
    assert b"hostile_requests_total" in answers[1][1]
    assert b"<html>" in answers[4][1]
    assert elapsed < 2, f"the connection stalled {elapsed:.1f} s"

    # many at once on a connection kept alive, which then still works
    with socket.create_connection((HOST, agent.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"ok\n") < 50 and time.monotonic() < deadline:
            data += s.recv(1 << 16)
        assert [a for a in split_responses(data)] == [(200, b"ok\n")] * 50
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert split_responses(read_all(s, time.monotonic() + 5)) == [(200, b"ok\n")]


def test_oversized_heads_and_bodies_are_refused_with_bounded_memory(agent: Agent) -> None:
    rss = rss_bytes(agent.proc.pid)
    # a header past the limit (8 KiB): 431, then the connection is closed
    for size in (9_000, 100_000, 1_000_000):
        with socket.create_connection((HOST, agent.port), timeout=5) as s:
            try:
                s.sendall(
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
                )
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before all of it was sent
            data = read_all(s, time.monotonic() + 5)
        assert data.split(b"\r\n", 1)[0] in (
            b"HTTP/1.1 431 Request Header Fields Too Large",
            b"HTTP/1.1 400 Bad Request",
        ), data[:100]
    # many headers, each small
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    with socket.create_connection((HOST, agent.port), timeout=5) as s:
        try:
            s.sendall(b"GET /health HTTP/1.1\r\n" + many + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_all(s, time.monotonic() + 5).startswith(b"HTTP/1.1 431")
    # a body on GET: refused from its Content-Length, never read
    for headers in (b"Content-Length: 100000000\r\n", b"Transfer-Encoding: chunked\r\n"):
        with socket.create_connection((HOST, agent.port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + b"x" * 1000)
            status = read_all(s, time.monotonic() + 5).split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.1 413 Content Too Large", b"HTTP/1.1 501 Not Implemented"), (
            status
        )
    # a small body is read and the connection goes on
    with socket.create_connection((HOST, agent.port), timeout=5) as s:
        s.sendall(
            b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        assert split_responses(read_all(s, time.monotonic() + 5)) == [(200, b"ok\n")] * 2

    # 500 connections, each holding a head just under the limit: memory stays bounded
    socks = open_many(agent.port, 500)
    try:
        line = b"X-Fill: " + b"a" * 7000 + b"\r\n"
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\n" + line)
        time.sleep(0.5)
        assert get(agent.port, "/health")[0] == 200
        grown = rss_bytes(agent.proc.pid) - rss
    finally:
        for s in socks:
            s.close()
    print(f"\nagent RSS +{grown / 1e6:.1f} MB with 500 connections holding 7 KB heads")
    assert grown < 40 * 1024 * 1024, grown
    assert get(agent.port, "/health")[0] == 200


def test_idle_and_trickling_connections_are_closed_at_the_deadline(tmp_path: Path) -> None:
    write_directory(tmp_path / "mp", 10)
    timeout = 2.0
    with Agent(
        tmp_path, ["--directory", str(tmp_path / "mp"), "--request-timeout", str(timeout)]
    ) as a:
        wait_for(lambda: a.samples(), 10, message=lambda: f"the agent serving:\n{a.log()}")
        idle = open_many(a.port, 300)
        trickling = open_many(a.port, 100)
        kept_alive = socket.create_connection((HOST, a.port), timeout=5)
        try:
            kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert kept_alive.recv(1024).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            # a byte every 0.2 s restarts no per-byte timer: the total deadline holds
            closed_at: dict[int, float] = {}
            while time.monotonic() - started < timeout + 2.5 and len(closed_at) < len(trickling):
                for i, s in enumerate(trickling):
                    if i in closed_at:
                        continue
                    try:
                        s.sendall(b"X")
                    except OSError:
                        closed_at[i] = time.monotonic() - started
                    else:
                        if closed_by_peer(s):
                            closed_at[i] = time.monotonic() - started
                        s.setblocking(True)
                time.sleep(0.2)
            assert len(closed_at) == len(trickling), (
                f"{len(trickling) - len(closed_at)} trickling still open"
            )
            assert max(closed_at.values()) < timeout + 1.5, max(closed_at.values())
            assert all(closed_by_peer(s) for s in idle), "idle connections still open"
            assert closed_by_peer(kept_alive), "an idle kept-alive connection still open"
            # and new clients are served
            assert get(a.port, "/health")[0] == 200
        finally:
            for s in [*idle, *trickling, kept_alive]:
                s.close()
