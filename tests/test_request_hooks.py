"""Our pre_request and post_request hooks in a real SyncWorker of Gunicorn,
served over real TCP: once the app's wrapper records every request, ours
step aside (for Gunicorn's own pre_request at log level debug, else for
hooks that do nothing), and a hook of the user's stays; either way each
request is recorded exactly once."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gunicorn_prometheus_exporter import gunicorn_config, metrics, worker_hooks


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"hi"]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def sync_worker(listener: socket.socket, hooks: dict[str, Any]) -> Any:
    """A SyncWorker as a worker process has it once post_fork and
    post_worker_init ran, with ``hooks`` as the Gunicorn config's."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from gunicorn.workers.sync import SyncWorker

    cfg = Config()
    for name, hook in hooks.items():
        cfg.set(name, hook)
    worker = SyncWorker(1, os.getpid(), [listener], None, 30, cfg, Logger(cfg))
    cfg.post_fork(None, worker)
    worker.wsgi = hello
    cfg.post_worker_init(worker)
    return worker


def serve_one(worker: Any, listener: socket.socket) -> bytes:
    client = socket.create_connection(listener.getsockname())
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    client.shutdown(socket.SHUT_WR)
    connection, peer = listener.accept()
    worker.handle(listener, connection, peer)
    answer = client.recv(4096)
    client.close()
    return answer


@pytest.fixture
def recorded(mp_dir: Path) -> Iterator[metrics.Metrics]:
    created = metrics.create()
    worker_hooks.inherit(created, str(mp_dir))
    yield created
    worker_hooks._worker.recorder = None  # this process is no worker after the test


OURS = {
    name: getattr(gunicorn_config, name)
    for name in ("post_fork", "post_worker_init", "pre_request", "post_request")
}


def requests(recorded: metrics.Metrics) -> float:
    return recorded.worker_requests.labels("GET", "2xx")._value.get()


@pytest.mark.parametrize("loglevel", ["info", "debug"])
def test_our_request_hooks_step_aside_once_the_wrapper_records(
    listener: socket.socket, recorded: metrics.Metrics, loglevel: str
) -> None:
    worker = sync_worker(listener, {**OURS, "loglevel": loglevel})
    for name in ("pre_request", "post_request"):
        assert getattr(worker.cfg, name) is not OURS[name]
    if loglevel == "debug":  # Gunicorn's own, which logs each request
        assert worker.cfg.pre_request is worker.cfg.settings["pre_request"].default
    assert serve_one(worker, listener).startswith(b"HTTP/1.1 200")
    assert requests(recorded) == 1


def test_a_hook_of_the_users_that_calls_ours_stays(
    listener: socket.socket, recorded: metrics.Metrics
) -> None:
    seen: list[str] = []

    def pre_request(worker: Any, req: Any) -> None:
        seen.append(req.path)
        gunicorn_config.pre_request(worker, req)

    worker = sync_worker(listener, {**OURS, "pre_request": pre_request})
    assert worker.cfg.pre_request is pre_request
    assert serve_one(worker, listener).startswith(b"HTTP/1.1 200")
    assert seen == ["/"] and requests(recorded) == 1
