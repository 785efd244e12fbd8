"""The agent: the C++ executable that serves /metrics, started with its
command line built from the settings and supervised by the Gunicorn master
(or run by hand as a sidecar: ``gunicorn-prometheus-agent --help``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._logging import logger
from .config import config
from .native_values import VALUE_ONLY_FILES
from .redis_password import RedisSecrets

BINARY = Path(__file__).parent / "bin" / "gunicorn-prometheus-agent"

# How long a TERMed agent may take before SIGKILL: longer than its last mirror
# pass may (3 s, kFinalPassDeadline in agent/main.cpp), so that pass is not cut.
STOP_GRACE_SECONDS = 5.0

# Asks the agent's mirror to fold this instance into the fleet archive as it
# stops (MirrorService::kRetireFile).
RETIRE_FILE = ".gpe-retire"

# Held while the agent is spawned and while the master forks a worker: a
# worker forked in the middle of Popen would keep Popen's error pipe open
# without ever exec'ing, and Popen would wait for it forever.
_spawn_lock = threading.Lock()
os.register_at_fork(
    before=_spawn_lock.acquire,
    after_in_parent=_spawn_lock.release,
    after_in_child=_spawn_lock.release,
)


def main() -> None:
    """Console script: run the agent with these arguments."""
    os.execv(BINARY, [str(BINARY), *sys.argv[1:]])


class AgentSupervisor:
    """Runs the agent and restarts it (backoff 0.5 s doubling to 5 s) when it
    dies; the agent also exits by itself when the master is gone. A failing
    agent is reported once a minute, not at every attempt."""

    def __init__(
        self, args: list[str], env: dict[str, str], secrets: RedisSecrets | None = None
    ) -> None:
        self._args = [str(BINARY), *args]
        self._env = env
        self._directory = args[args.index("--directory") + 1] if "--directory" in args else None
        # The secrets go through a pipe, one line each, in the order of their
        # flags: never on a command line or in an environment.
        self._secrets: list[str] = []
        if secrets is not None and secrets.password is not None:
            self._args.append("--redis-password-stdin")
            self._secrets.append(secrets.password)
        if secrets is not None and secrets.sentinel_password is not None:
            self._args.append("--redis-sentinel-password-stdin")
            self._secrets.append(secrets.sentinel_password)
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="gunicorn-prometheus-agent", daemon=True
        )
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
                self._args,
                env=self._env,
                stdin=subprocess.PIPE if self._secrets else subprocess.DEVNULL,
                close_fds=True,
            )
        if self._secrets and process.stdin is not None:
            process.stdin.write(b"".join(secret.encode() + b"\n" for secret in self._secrets))
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

    def stop(self, retire: bool = False) -> None:
        """Stops the agent; ``retire``: the instance leaves for good (its
        directory goes), so the agent folds it into the fleet archive."""
        self._stopping.set()
        if retire and self._directory is not None:
            with contextlib.suppress(OSError):
                Path(self._directory, RETIRE_FILE).touch()
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


def _arguments(directory: str) -> tuple[list[str], dict[str, str]]:
    """The agent's arguments for this master and ``directory``, from the
    settings, and its environment (without the Redis password)."""
    args = [
        "--directory",
        directory,
        "--source",
        "files",
        "--bind",
        config.prometheus_bind_address,
        "--port",
        str(config.prometheus_metrics_port),
        "--parent-pid",
        str(os.getpid()),
    ]
    for flag, value in (
        ("--certfile", config.prometheus_ssl_certfile),
        ("--keyfile", config.prometheus_ssl_keyfile),
        ("--client-cafile", config.prometheus_ssl_client_cafile),
        ("--client-capath", config.prometheus_ssl_client_capath),
    ):
        if value:
            args += [flag, value]
    if config.prometheus_ssl_client_auth_required:
        args.append("--client-auth-required")
    if "GUNICORN_PID" in os.environ:
        args.append("--upgrade")
    if VALUE_ONLY_FILES:
        args.append("--value-only-files")  # prometheus_client <= 0.17
    if config.redis_enabled:
        args += [
            "--mirror",
            "--redis-prefix",
            config.redis_key_prefix,
            "--redis-instance",
            config.redis_instance_id,
            "--redis-ttl",
            "0" if config.redis_ttl_disabled else str(config.redis_ttl_seconds),
            "--flush-interval",
            str(config.redis_flush_interval),
        ]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    return args, env


def start_agent(directory: str, secrets: RedisSecrets, serve_http: bool) -> AgentSupervisor | None:
    """The agent for ``directory``, started and supervised. ``serve_http``
    False: it only mirrors to Redis, for a sidecar that serves the metrics
    (no agent then when Redis is off: it would do nothing)."""
    args, env = _arguments(directory)
    if not serve_http:
        if not config.redis_enabled:
            logger.warning(
                "no metrics agent: it would neither serve /metrics nor mirror (REDIS_ENABLED is off)"
            )
            return None
        args.append("--no-http")
    supervisor = AgentSupervisor(args, env, secrets if config.redis_enabled else None)
    supervisor.start()
    return supervisor
