"""The master-side Gunicorn hooks (on_starting, when_ready, pre_fork,
child_exit, on_reload, on_exit): settings checked, the multiprocess
directory ready, the agent started and stopped, signals and worker restarts
counted, dead workers' files archived. They run in the master; the workers
inherit what on_starting made (see :mod:`.worker_hooks`).
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field
from typing import Any

from . import _native, directory, worker_hooks
from ._logging import logger
from .agent import AgentSupervisor, start_agent
from .config import config
from .guard import guarded
from .metrics import MASTER_RESTART_REASONS, MASTER_SIGNALS, Metrics, create
from .middleware import request_path
from .multiprocess import mark_process_dead
from .redis_password import RedisSecrets, take_redis_secrets

COUNTED_SIGNALS = ("hup", "ttin", "ttou", "usr1", "usr2", "winch", "term", "int", "quit", "chld")


@dataclass
class _Master:
    """What the master-side hooks share (hooks are plain functions)."""

    metrics: Metrics | None = None
    directory: str | None = None
    redis_secrets: RedisSecrets | None = None
    supervisor: AgentSupervisor | None = None
    stopping: bool = False
    reload_pids: set[int] = field(default_factory=set)
    scale_down_pids: set[int] = field(default_factory=set)
    backlog_warned: bool = False


_master = _Master()  # one master per process


def on_starting(server: Any) -> None:
    """Master, before anything: settings checked, directory ready, values native."""
    config.validate()  # an invalid setting stops Gunicorn here, named (not a metrics failure)
    if _master.redis_secrets is None:
        _master.redis_secrets = take_redis_secrets()  # first: whatever fails later
    _on_starting(server)


@guarded
def _on_starting(server: Any) -> None:
    upgrade = "GUNICORN_PID" in os.environ
    _master.directory = directory.prepare_master()
    if directory.is_private(_master.directory):
        # A USR2 upgrade starts the new master with the environment Gunicorn
        # saved at start: it must get the same directory, and own it.
        env_orig = getattr(getattr(server, "cfg", None), "env_orig", None)
        if isinstance(env_orig, dict):
            env_orig["PROMETHEUS_MULTIPROC_DIR"] = _master.directory
            env_orig[directory.OWNED_DIRECTORY] = _master.directory
    _master.metrics = create()
    _native.count_storage_errors_in(_master.metrics.storage_errors._value)
    _init_master_series(server, _master.metrics)
    worker_hooks.inherit(_master.metrics, _master.directory)
    install_missing_hooks(server)
    logger.info("metrics directory %s%s", _master.directory, " (binary upgrade)" if upgrade else "")


def _init_master_series(server: Any, metrics: Metrics) -> None:
    """Every labelled counter of the master at 0, its identity, its configuration."""
    for reason in MASTER_RESTART_REASONS:
        metrics.master_worker_restart.labels(reason)
    for name in MASTER_SIGNALS:
        metrics.master_signals.labels(name)
    metrics.build_info.labels(_version(), _gunicorn_version(), platform.python_version()).set(1)
    _set_configured(server, metrics)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gunicorn-prometheus-exporter")
    except PackageNotFoundError:  # run from a source tree
        return "unknown"


def _gunicorn_version() -> str:
    try:
        import gunicorn

        return str(gunicorn.__version__)
    except ImportError:  # the library without Gunicorn
        return "unknown"


def _set_configured(server: Any, metrics: Metrics) -> None:
    # num_workers follows TTIN/TTOU; cfg.workers before the arbiter has it.
    workers = getattr(server, "num_workers", None)
    if workers is None:
        workers = getattr(getattr(server, "cfg", None), "workers", None)
    if isinstance(workers, int):
        metrics.master_workers_configured.set(workers)


def _sample_in_master_loop(server: Any, metrics: Metrics) -> None:
    """The arbiter's manage_workers runs in its main loop (every second at
    most, and after each signal): after it, the configured workers and the
    listen backlog are sampled there, without a thread and without blocking
    (one getsockopt per listener)."""
    original = getattr(server, "manage_workers", None)
    if original is None or getattr(original, "_gpe_sampled", False):
        return

    def manage_workers() -> Any:
        try:
            return original()
        finally:
            _sample_master(server, metrics)

    manage_workers._gpe_sampled = True  # type: ignore[attr-defined]
    server.manage_workers = manage_workers
    _sample_master(server, metrics)


@guarded
def _sample_master(server: Any, metrics: Metrics) -> None:
    _set_configured(server, metrics)
    backlog = 0
    for listener in getattr(server, "LISTENERS", None) or ():
        sock = getattr(listener, "sock", listener)
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue  # Unix sockets have no TCP_INFO (Gunicorn reports none either)
            backlog += _native.listen_backlog(sock.fileno())
        except (OSError, ValueError) as error:
            if not _master.backlog_warned:
                _master.backlog_warned = True
                logger.warning("listen backlog not sampled (warned once): %s", error)
            return
    metrics.master_listen_backlog.set(backlog)


def install_missing_hooks(server: Any) -> None:
    """Every hook of ours that the configuration left at Gunicorn's default
    is installed (a 0.2.x configuration names only a few of them); hooks of
    the user's own are kept (they call ours, see :mod:`.hooks`)."""
    cfg: Any = getattr(server, "cfg", None)
    settings = getattr(cfg, "settings", None)
    if cfg is None or not isinstance(settings, dict):
        return
    added = []
    for name, hook in HOOKS.items():
        setting = settings.get(name)
        if setting is not None and setting.value is setting.default:
            cfg.set(name, hook)
            added.append(name)
    if added and len(added) < len(HOOKS):
        logger.info("metrics hooks added to the configuration: %s", ", ".join(added))


def _warn_if_uninstrumented(server: Any) -> None:
    worker_class = getattr(server, "worker_class", None)
    if isinstance(worker_class, type) and request_path(worker_class) is None:
        logger.warning(
            "worker class %s.%s serves requests without Gunicorn's request hooks and is not one the "
            "exporter can instrument: its requests are not counted (resource, restart and app metrics "
            "still are). Supported: sync, gthread, gevent, eventlet, gevent_pywsgi, tornado, asgi, "
            "uvicorn's UvicornWorker/UvicornH11Worker and their subclasses.",
            worker_class.__module__,
            worker_class.__qualname__,
        )


def _count_signals(server: Any, metrics: Metrics) -> None:
    for name in COUNTED_SIGNALS:
        original = getattr(server, f"handle_{name}", None)
        if original is None or getattr(original, "_gpe_counted", False):
            continue

        def handler(original: Any = original, name: str = name) -> Any:
            metrics.master_signals.labels(name.upper()).inc()
            if name in ("term", "int", "quit"):
                _master.stopping = True
            if name == "ttou":
                before = set(server.WORKERS)
                result = original()
                _master.scale_down_pids |= before - set(server.WORKERS) | _killed_oldest(
                    server, before
                )
                return result
            return original()

        handler._gpe_counted = True  # type: ignore[attr-defined]
        setattr(server, f"handle_{name}", handler)


def _killed_oldest(server: Any, before: set[int]) -> set[int]:
    # TTOU kills the oldest workers beyond num_workers (they exit later).
    excess = len(before) - server.num_workers
    if excess <= 0:
        return set()
    workers = sorted(server.WORKERS.items(), key=lambda item: item[1].age)
    return {pid for pid, _ in workers[:excess]}


def when_ready(server: Any) -> None:
    """Master, listening: count signals, start the agent."""
    start_master_metrics(server, serve_http=True)


def start_master_metrics(server: Any, serve_http: bool) -> None:
    """when_ready's work; ``serve_http`` False: the agent only mirrors to
    Redis, for a sidecar that serves the metrics."""
    if _master.metrics is None:  # on_starting was not configured: its checks stop Gunicorn
        on_starting(server)
    _start_agent(server, serve_http)


@guarded
def _start_agent(server: Any, serve_http: bool) -> None:
    metrics, path = _master.metrics, _master.directory
    if metrics is None or path is None:
        return
    _count_signals(server, metrics)
    _sample_in_master_loop(server, metrics)
    _warn_if_uninstrumented(server)
    metrics.master_workers.set(len(server.WORKERS))  # more as they are forked (pre_fork)
    _master.supervisor = start_agent(path, _master.redis_secrets or RedisSecrets(), serve_http)
    if "GUNICORN_PID" in os.environ:
        directory.archive_when_gone(int(os.environ["GUNICORN_PID"]), path)


def _restart_reason(worker: Any, path: str) -> str | None:
    pid = worker.pid
    reported = directory.take_exit_reason(path, pid)
    if _master.stopping:
        return None  # shutting down: not a restart
    if getattr(worker, "aborted", False) or reported == "timeout":
        return "timeout"
    if pid in _master.reload_pids:
        return "reload"
    if pid in _master.scale_down_pids:
        return "scale_down"
    if reported in ("max_requests", "graceful"):
        return reported
    return "crash"  # killed (e.g. out of memory) or died without a word


@guarded
def child_exit(server: Any, worker: Any) -> None:
    """Master, a worker is gone: count the restart, archive its metrics."""
    metrics, path = _master.metrics, _master.directory
    if metrics is None or path is None:
        return
    reason = _restart_reason(worker, path)
    if reason is not None:
        metrics.master_worker_restart.labels(reason).inc()
    _master.reload_pids.discard(worker.pid)
    _master.scale_down_pids.discard(worker.pid)
    metrics.master_workers.set(len(server.WORKERS))  # reaped: no longer among them
    mark_process_dead(worker.pid, path)


@guarded
def pre_fork(server: Any, worker: Any) -> None:
    """Master, about to fork a worker: one more alive."""
    if _master.metrics is not None:
        _master.metrics.master_workers.set(len(server.WORKERS) + 1)


@guarded
def on_reload(server: Any) -> None:
    """Master, HUP: the workers running now will be replaced."""
    _master.reload_pids |= set(server.WORKERS)


@guarded
def on_exit(server: Any) -> None:
    """Master, leaving: stop the agent, remove a directory of ours."""
    _master.stopping = True
    successor = bool(getattr(server, "reexec_pid", 0))
    if _master.supervisor is not None:
        # The instance leaves for good when nobody carries its values on: no
        # USR2 successor, and the files go (ours) or are removed at the next
        # start.
        gone = not successor and (directory.owns_current() or config.cleanup_db_files)
        _master.supervisor.stop(retire=gone)
        _master.supervisor = None
    directory.release(successor=successor)


# Every hook of ours, by Gunicorn setting name.
HOOKS = {
    "on_starting": on_starting,
    "when_ready": when_ready,
    "child_exit": child_exit,
    "pre_fork": pre_fork,
    "on_reload": on_reload,
    "on_exit": on_exit,
    **worker_hooks.HOOKS,
}
