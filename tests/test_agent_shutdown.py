"""Shutdown is bounded: SIGTERM ends the agent within the supervisor's grace
period even when Redis stops answering in the middle of the agent's work
(its last mirror pass has a deadline). The hanging server is a fake: a real
Redis cannot be made to accept commands and never answer them."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from gunicorn_prometheus_exporter.agent import STOP_GRACE_SECONDS
from gunicorn_runner import Agent, wait_for

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent


class SilentServer:
    """Accepts connections on loopback, reads everything, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.received = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def close(self) -> None:
        self._stop.set()
        for conn in self.connections:
            conn.close()
        self.sock.close()


def test_sigterm_ends_the_agent_in_time_while_redis_hangs(tmp_path: Path) -> None:
    directory = tmp_path / "mp"
    directory.mkdir()
    server = SilentServer()
    try:
        env = {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(server.port),
            "REDIS_SOCKET_TIMEOUT": "5",
            "REDIS_CONNECT_TIMEOUT": "5",
        }
        with Agent(
            tmp_path,
            ["--directory", str(directory), "--mirror", "--flush-interval", "0.2"],
            env=env,
        ) as agent:
            wait_for(
                lambda: server.received > 0,
                10,
                message=lambda: f"the agent to talk to Redis:\n{agent.log()}",
            )
            time.sleep(0.5)  # now blocked in a pass that will never be answered
            started = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(STOP_GRACE_SECONDS + 5)
            took = time.monotonic() - started
            assert took < STOP_GRACE_SECONDS, f"{took:.1f} s:\n{agent.log()}"
            assert "did not finish within 3 s" in agent.log(), agent.log()
    finally:
        server.close()
