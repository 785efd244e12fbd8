"""The agent and Python read the same settings table: the same values
accepted, the same errors, and the Redis timeouts honoured by the agent
against a real redis-server that stops answering."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from gunicorn_prometheus_exporter.config import ExporterConfig
from gunicorn_runner import Agent, http_get, wait_for

redis_server = pytest.importorskip("redis_server")


def _agent_refusal(tmp_path: Path, args: list[str], env: dict[str, str]) -> str:
    """The agent's error for ``args``/``env`` (it exits with 2)."""
    with Agent(tmp_path, args, env=env) as agent:
        assert agent.proc.wait(10) == 2, agent.log()
        return agent.log().strip().removeprefix("gunicorn-prometheus-agent: ")


def _python_refusal(monkeypatch: pytest.MonkeyPatch, name: str, value: str, attribute: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as info:
        getattr(ExporterConfig(), attribute)
    monkeypatch.delenv(name)
    return str(info.value)


@pytest.mark.parametrize(
    "name, value, attribute",
    [
        ("REDIS_SSL_CERT_REQS", "optional", "redis_ssl_verify"),
        ("REDIS_SSL_CERT_REQS", "bogus", "redis_ssl_verify"),
        ("REDIS_KEY_PREFIX", "app*", "redis_key_prefix"),
        ("REDIS_KEY_PREFIX", "a[b]", "redis_key_prefix"),
        ("REDIS_PORT", "0", "redis_port"),
        ("REDIS_SOCKET_TIMEOUT", "soon", "redis_socket_timeout"),
        ("REDIS_CONNECT_TIMEOUT", "-1", "redis_connect_timeout"),
        ("REDIS_FLUSH_INTERVAL", "1s", "redis_flush_interval"),
        ("REDIS_ENABLED", "maybe", "redis_enabled"),
    ],
)
def test_python_and_the_agent_refuse_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, attribute: str
) -> None:
    python = _python_refusal(monkeypatch, name, value, attribute)
    assert name in python and repr(value) in python
    # a sidecar reads every Redis setting at start
    assert _agent_refusal(tmp_path, ["--source", "redis"], {name: value}) == python


def test_the_agent_refuses_a_glob_prefix_flag(tmp_path: Path) -> None:
    """hooks.py passes the prefix as --redis-prefix: refused there too."""
    message = _agent_refusal(tmp_path, ["--source", "redis", "--redis-prefix", "app?"], {})
    assert message == "--redis-prefix='app?' must not contain * ? [ ] or \\"


@pytest.mark.parametrize("value, verify", [("required", True), ("none", False), (" NONE ", False)])
def test_cert_reqs_accepted_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, verify: bool
) -> None:
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", value)
    assert ExporterConfig().redis_ssl_verify is verify
    with Agent(tmp_path, ["--source", "redis"], env={"REDIS_SSL_CERT_REQS": value}) as agent:
        wait_for(lambda: _status(agent.port, "/health") == 200, 10, message=agent.log)


def _status(port: int, path: str) -> int | None:
    try:
        return http_get(port, path, timeout=2)[0]
    except OSError:
        return None


def _scrape_of_a_stopped_redis(tmp_path: Path, socket_timeout: str) -> tuple[int, bytes, float]:
    """A sidecar's scrape while its redis-server is stopped (SIGSTOP: the
    kernel still accepts, nothing answers)."""
    with (
        redis_server.RedisServer() as redis,
        Agent(
            tmp_path,
            ["--source", "redis"],
            name=f"sidecar-{socket_timeout}",
            env={
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(redis.port),
                "REDIS_SOCKET_TIMEOUT": socket_timeout,
                "REDIS_CONNECT_TIMEOUT": socket_timeout,
            },
        ) as agent,
    ):
        wait_for(lambda: _status(agent.port, "/metrics") == 200, 10, message=agent.log)
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            status, _, body = http_get(agent.port, "/metrics", timeout=60)
            return status, body, time.monotonic() - start
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)


def test_the_agent_honours_redis_socket_timeout(tmp_path: Path) -> None:
    status, body, short = _scrape_of_a_stopped_redis(tmp_path, "0.5")
    assert status == 503, body
    assert b"timeout" in body, body
    assert short < 4, short
    status, body, long = _scrape_of_a_stopped_redis(tmp_path, "3")
    assert status == 503, body
    assert long >= 2.5, long  # the default (5 s) or the short one would not say so


def _scrape_of_a_full_listener(tmp_path: Path, connect_timeout: str) -> tuple[int, float]:
    """A sidecar's scrape when its Redis address never completes a connection:
    a listener whose accept queue is full drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # Linux queues backlog + 1; more to be sure
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        try:
            with Agent(
                tmp_path,
                ["--source", "redis"],
                name=f"sidecar-{connect_timeout}",
                env={
                    "REDIS_HOST": "127.0.0.1",
                    "REDIS_PORT": str(port),
                    "REDIS_CONNECT_TIMEOUT": connect_timeout,
                    "REDIS_SOCKET_TIMEOUT": "0.5",
                },
            ) as agent:
                wait_for(lambda: _status(agent.port, "/health") is not None, 10, message=agent.log)
                start = time.monotonic()
                status = http_get(agent.port, "/metrics", timeout=60)[0]
                return status, time.monotonic() - start
        finally:
            for s in fillers:
                s.close()


def test_the_agent_honours_redis_connect_timeout(tmp_path: Path) -> None:
    status, short = _scrape_of_a_full_listener(tmp_path, "0.5")
    assert status == 503
    assert short < 4, short
    status, long = _scrape_of_a_full_listener(tmp_path, "3")
    assert status == 503
    assert long >= 2.5, long
