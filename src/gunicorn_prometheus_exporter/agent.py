"""The agent: the C++ executable that serves /metrics, started and supervised
by the Gunicorn master (or run by hand as a sidecar: ``gunicorn-prometheus-agent
--help``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger("gunicorn_prometheus_exporter")

BINARY = Path(__file__).parent / "bin" / "gunicorn-prometheus-agent"

# How long a TERMed agent may take before SIGKILL: longer than its last mirror
# pass may (3 s, kFinalPassDeadline in agent/main.cpp), so that pass is not cut.
STOP_GRACE_SECONDS = 5.0

# Held while the agent is spawned and while the master forks a worker: a
# worker forked in the middle of Popen would keep Popen's error pipe open
# without ever exec'ing, and Popen would wait for it forever.
_spawn_lock = threading.Lock()
os.register_at_fork(before=_spawn_lock.acquire, after_in_parent=_spawn_lock.release,
                    after_in_child=_spawn_lock.release)


def main() -> None:
    """Console script: run the agent with these arguments."""
    os.execv(BINARY, [str(BINARY), *sys.argv[1:]])


class AgentSupervisor:
    """Runs the agent and restarts it (backoff 0.5 s doubling to 5 s) when it
    dies; the agent also exits by itself when the master is gone. A failing
    agent is reported once a minute, not at every attempt."""

    def __init__(self, args: list[str], env: dict[str, str], redis_password: str | None = None) -> None:
        self._args = [str(BINARY), *args]
        self._env = env
        self._password = redis_password
        if redis_password is not None:
            self._args.append("--redis-password-stdin")
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="gunicorn-prometheus-agent", daemon=True)
        self.starts = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with _spawn_lock:
            process = subprocess.Popen(
                self._args, env=self._env,
                stdin=subprocess.PIPE if self._password is not None else subprocess.DEVNULL, close_fds=True)
        if self._password is not None and process.stdin is not None:
            # The secret goes through a pipe: never on a command line or in an environment.
            process.stdin.write(self._password.encode() + b"\n")
            process.stdin.close()
        return process

    def _run(self) -> None:
        delay = 0.5
        last_report = -1e9
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
                self.starts += 1
            started = time.monotonic()
            code = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran for a while: a fresh failure
            if time.monotonic() - last_report > 60:
                logger.warning("metrics agent exited with code %s; restarting it", code)
                last_report = time.monotonic()
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._thread.is_alive():
            self._thread.join(5)
