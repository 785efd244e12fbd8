"""Redis, or whatever answers on its address, misbehaving (issue 8).

A fake server (a thread in this process, on 127.0.0.1, every loop bounded)
plays the faults a real redis-server cannot produce: a bulk string
announced as 2 GB and then streamed, fast or trickling, and a SCAN whose
cursor never comes back to 0. The scrape must end within the socket
timeout with an error that says why, and the agent's memory must not
follow the reply (peak RSS growth under 64 MB).

A real redis-server for the rest: a list at ``{prefix}:keyset``, FLUSHALL
with the connection up (the mirror must notice and send everything again
within two flush intervals, whatever the TTL) and Redis out of memory (the
log must say OOM, not only EXECABORT; nothing is lost).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gunicorn_prometheus_exporter.backend import (
    RedisClient,
    RedisError,
    RedisMultiProcessCollector,
    RedisStorageDict,
    redis_key,
)
from gunicorn_runner import Agent, Gunicorn, http_get, redis_command, value, wait_for

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

redis_server = pytest.importorskip("redis_server")
RedisServer = redis_server.RedisServer

LOGGER = "gunicorn_prometheus_exporter"
MB = 1024 * 1024
SOCKET_TIMEOUT = 2.0
# What a scrape may take beyond the socket timeout: HTTP, process start-up
# of the reply, a loaded 2-core machine.
SLACK = 1.5


# --------------------------------------------------------------------------
# a fake server
# --------------------------------------------------------------------------


def _parse(buffer: bytearray) -> list[bytes] | None:
    """One RESP array of bulk strings from the front of buffer, if complete."""
    end = buffer.find(b"\r\n")
    if end < 0 or not buffer.startswith(b"*"):
        return None
    count, at, out = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(buffer[at + 1 : end])
        if len(buffer) < end + 2 + size + 2:
            return None
        out.append(bytes(buffer[end + 2 : end + 2 + size]))
        at = end + 2 + size + 2
    del buffer[:at]
    return out


Answer = Callable[["FakeRedis", socket.socket, list[bytes]], None]


class FakeRedis:
    """Answers PING with PONG and every other command with ``answer``; each
    connection is served for at most ``limit`` seconds."""

    def __init__(self, answer: Answer, limit: float = 20.0) -> None:
        self.answer = answer
        self.limit = limit
        self.stop = threading.Event()
        self.commands: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.limit
        buffer = bytearray()
        conn.settimeout(0.1)
        with conn:
            while not self.stop.is_set() and time.monotonic() < deadline:
                command = _parse(buffer)
                if command is None:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                    continue
                self.commands.append(command[0].upper())
                try:
                    if command[0].upper() == b"PING":
                        conn.sendall(b"+PONG\r\n")
                    else:
                        self.answer(self, conn, command)
                except OSError:
                    return

    def stream(self, conn: socket.socket, chunk: int, pause: float, seconds: float = 15.0) -> None:
        """Filler bytes until the peer goes away (bounded in time)."""
        filler = b"x" * chunk
        end = min(time.monotonic() + seconds, time.monotonic() + self.limit)
        conn.settimeout(1.0)
        while not self.stop.is_set() and time.monotonic() < end:
            conn.sendall(filler)
            if pause:
                time.sleep(pause)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for t in self.threads:
            t.join(5)

    def __enter__(self) -> FakeRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def huge_bulk(chunk: int, pause: float) -> Answer:
    def answer(server: FakeRedis, conn: socket.socket, command: list[bytes]) -> None:
        conn.sendall(b"$2000000000\r\n")
        server.stream(conn, chunk, pause)

    return answer


def endless_scan(server: FakeRedis, conn: socket.socket, command: list[bytes]) -> None:
    if command[0].upper() == b"SCAN":
        key = b"gunicorn:counter:1@h:metric:" + str(len(server.commands)).encode()
        conn.sendall(b"*2\r\n$1\r\n7\r\n*1\r\n$%d\r\n%s\r\n" % (len(key), key))
    else:
        conn.sendall(b"$-1\r\n")


# --------------------------------------------------------------------------
# memory of a process
# --------------------------------------------------------------------------


def _status(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakGrowth:
    """Peak RSS of a process from now on, less its RSS now (VmHWM is reset
    through clear_refs)."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.start = _status(pid, "VmRSS")

    def bytes(self) -> int:
        return _status(self.pid, "VmHWM") - self.start


def _sidecar(tmp_path: Path, port: int, **env: str) -> Agent:
    agent = Agent(
        tmp_path,
        ["--source", "redis"],
        name="sidecar",
        env={
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(port),
            "REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
            "REDIS_CONNECT_TIMEOUT": "1",
            **env,
        },
    )
    try:
        wait_for(
            lambda: _try_status(agent.port, "/health") == 200,
            10,
            message=lambda: f"the sidecar serving:\n{agent.log()}",
        )
    except BaseException:
        agent.stop()
        raise
    return agent


def _try_status(port: int, path: str) -> int | None:
    try:
        return http_get(port, path, timeout=2)[0]
    except OSError:
        return None


def _timed_scrape(port: int) -> tuple[int, bytes, float]:
    start = time.monotonic()
    status, _, body = http_get(port, "/metrics", timeout=30)
    return status, body, time.monotonic() - start


# --------------------------------------------------------------------------
# faults only a fake server produces
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunk, pause, expected",
    [
        (64 * 1024, 0.0, b"REDIS_MAX_REPLY_BYTES"),  # as fast as loopback: the size limit
        (4 * 1024, 0.005, b"socket timeout"),  # trickling: the deadline
    ],
    ids=["streamed", "trickled"],
)
def test_sidecar_refuses_a_2gb_bulk_within_the_deadline(
    tmp_path: Path, chunk: int, pause: float, expected: bytes
) -> None:
    """Before the fix: peak RSS 5.87 GB and 17.8 s for one scrape (5 s timeout)."""
    with FakeRedis(huge_bulk(chunk, pause)) as fake:
        sidecar = _sidecar(tmp_path, fake.port)
        try:
            growth = PeakGrowth(sidecar.proc.pid)
            for _ in range(2):  # and the next scrape is not stuck behind the first
                status, body, took = _timed_scrape(sidecar.port)
                assert status == 503, body
                assert expected in body, body
                assert took < SOCKET_TIMEOUT + SLACK, (took, body)
                time.sleep(0.3)  # past the reconnect backoff
            assert growth.bytes() < 64 * MB, f"{growth.bytes() / MB:.1f} MB"
            assert sidecar.proc.poll() is None
        finally:
            sidecar.stop()


def test_python_client_refuses_a_2gb_bulk() -> None:
    with FakeRedis(huge_bulk(64 * 1024, 0.0)) as fake:
        client = RedisClient(
            host="127.0.0.1", port=fake.port, socket_timeout=SOCKET_TIMEOUT, max_reply_bytes=4 * MB
        )
        growth = PeakGrowth()
        start = time.monotonic()
        with pytest.raises(RedisError, match=r"REDIS_MAX_REPLY_BYTES = 4194304 bytes"):
            RedisMultiProcessCollector(None, client).render()
        assert time.monotonic() - start < SOCKET_TIMEOUT + SLACK
        assert growth.bytes() < 64 * MB, f"{growth.bytes() / MB:.1f} MB"


def test_sidecar_ends_a_scan_that_never_returns_to_zero(tmp_path: Path) -> None:
    """Before the fix: the scrape never returns, the next waits behind it, memory grows."""
    with FakeRedis(endless_scan) as fake:
        sidecar = _sidecar(tmp_path, fake.port)
        try:
            growth = PeakGrowth(sidecar.proc.pid)
            results: list[tuple[int, bytes, float]] = []
            scrapes = [
                threading.Thread(target=lambda: results.append(_timed_scrape(sidecar.port)))
                for _ in range(2)
            ]
            for t in scrapes:
                t.start()
            for t in scrapes:
                t.join(30)
            assert len(results) == 2
            for status, body, took in results:
                assert status == 503, body
                assert b"SCAN" in body and b"never came back to 0" in body, body
                # two scrapes at once: the second waits for the first, no longer
                assert took < 2 * SOCKET_TIMEOUT + SLACK, took
            assert min(took for *_, took in results) < SOCKET_TIMEOUT + SLACK
            assert growth.bytes() < 64 * MB, f"{growth.bytes() / MB:.1f} MB"
            assert fake.commands.count(b"SCAN") > 10
        finally:
            sidecar.stop()


def test_max_reply_bytes_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gunicorn_prometheus_exporter.config import config

    for raw in ("lots", "100", str(8 << 30)):
        monkeypatch.setenv("REDIS_MAX_REPLY_BYTES", raw)
        with pytest.raises(ValueError, match="REDIS_MAX_REPLY_BYTES"):
            _ = config.redis_max_reply_bytes
    monkeypatch.setenv("REDIS_MAX_REPLY_BYTES", str(2 * MB))
    assert config.redis_client_kwargs()["max_reply_bytes"] == 2 * MB
    # the agent says the same at start
    agent = Agent(tmp_path, ["--source", "redis"], env={"REDIS_MAX_REPLY_BYTES": "100"})
    try:
        assert agent.proc.wait(10) == 2
        assert "REDIS_MAX_REPLY_BYTES='100' must be a whole number from 1048576" in agent.log()
    finally:
        agent.stop()


# --------------------------------------------------------------------------
# a real redis-server
# --------------------------------------------------------------------------


def test_keyset_holding_a_list_does_not_fail_scrapes(
    tmp_path: Path, redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Before the fix: every sidecar scrape answers 503 until a series is created or deleted."""
    client = RedisClient(**redis.client_kwargs())
    RedisStorageDict(client, "gunicorn", "counter", process="1@h")[
        redis_key("jobs", "jobs_total", [], [], "Jobs.")
    ] = 3.0
    client.execute_command("DEL", "gunicorn:keyset")
    client.execute_command("RPUSH", "gunicorn:keyset", "foreign")
    sidecar = _sidecar(tmp_path, redis.port)
    try:
        for _ in range(3):
            status, body, _ = _timed_scrape(sidecar.port)
            assert status == 200, body
            assert b"jobs_total 3.0" in body, body
        assert "gunicorn:keyset" in sidecar.log() and "WRONGTYPE" in sidecar.log(), sidecar.log()
    finally:
        sidecar.stop()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert b"jobs_total 3.0" in RedisMultiProcessCollector(None, client).render()
    assert any("gunicorn:keyset" in r.getMessage() for r in caplog.records)


def _requests(samples) -> float:
    return value(samples, "gunicorn_worker_requests_total")


@pytest.mark.parametrize("ttl", ["0", None], ids=["ttl-0", "ttl-default"])
def test_flushall_heals_within_two_flush_intervals(tmp_path: Path, redis, ttl: str | None) -> None:
    """Before the fix, with the connection up: REDIS_TTL_SECONDS=0 never heals (a
    fresh sidecar shows 0 requests for ever), the default TTL after up to 100 s."""
    interval = 1.0
    env = {
        **redis.env(),
        "REDIS_INSTANCE_ID": "hostA",
        "REDIS_FLUSH_INTERVAL": str(interval),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "a"),
    }
    if ttl is not None:
        env["REDIS_TTL_SECONDS"] = ttl
    (tmp_path / "a").mkdir()
    sidecar = _sidecar(tmp_path, redis.port)
    g = Gunicorn(tmp_path, env=env, wait_ready=False, name="hostA")
    try:
        g.wait_serving()
        n = 40
        for _ in range(n):
            assert g.status("/") == 200
        sidecar.wait_metrics(lambda s: _requests(s) == n, 10, what=f"{n} requests")
        redis_command(redis.port, "FLUSHALL")
        flushed = time.monotonic()
        assert _requests(sidecar.samples()) == 0
        sidecar.wait_metrics(
            lambda s: _requests(s) == n,
            2 * interval + SLACK,
            what=f"{n} requests again after FLUSHALL",
        )
        healed = time.monotonic() - flushed
        assert healed < 2 * interval + SLACK, healed
        # everything is back: meta keys (else no series would show), and a
        # fresh sidecar sees what the old one sees
        fresh = _sidecar(tmp_path, redis.port)
        try:
            assert _requests(fresh.samples()) == n
        finally:
            fresh.stop()
        assert "Redis lost keys of this instance" in g.log(), g.log()
    finally:
        g.stop()
        sidecar.stop()


def test_out_of_memory_is_named_and_nothing_is_lost(tmp_path: Path, redis) -> None:
    """Before the fix the log said only EXECABORT."""
    env = {
        **redis.env(),
        "REDIS_INSTANCE_ID": "hostA",
        "REDIS_FLUSH_INTERVAL": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "a"),
    }
    (tmp_path / "a").mkdir()
    sidecar = _sidecar(tmp_path, redis.port)
    g = Gunicorn(tmp_path, env=env, wait_ready=False, name="hostA")
    try:
        g.wait_serving()
        for _ in range(10):
            assert g.status("/") == 200
        sidecar.wait_metrics(lambda s: _requests(s) == 10, 10, what="10 requests")
        redis_command(redis.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis_command(redis.port, "CONFIG", "SET", "maxmemory", "1")
        for _ in range(20):  # the app keeps serving
            assert g.status("/missing") == 404
        wait_for(
            lambda: "OOM command not allowed" in g.log(),
            10,
            message=lambda: f"OOM in the log:\n{g.log()[-3000:]}",
        )
        # the series layout's transaction is aborted; the instance layout's
        # script is refused at its first write: either way the cause is named
        assert "EXECABORT" in g.log() or "mirror write failed: OOM" in g.log()
        assert _requests(sidecar.samples()) == 10
        redis_command(redis.port, "CONFIG", "SET", "maxmemory", "0")
        sidecar.wait_metrics(lambda s: _requests(s) == 30, 10, what="30 requests: nothing lost")
    finally:
        g.stop()
        sidecar.stop()
