"""Gunicorn server hooks: metrics for every worker type, the agent, dead
worker bookkeeping.

Use them through ``gunicorn_prometheus_exporter.gunicorn_config`` (see the
README); to keep hooks of your own, call ours from yours. Master-side hooks
(on_starting, when_ready, child_exit, nworkers_changed, on_reload, on_exit)
and worker-side hooks (post_fork, pre_request, post_request, worker_exit,
worker_abort) share this module's state, which is per process by nature.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import _native, directory
from .agent import AgentSupervisor
from .config import config
from .metrics import METHODS, STATUS_CLASSES, WORKER_STATES, Metrics, WorkerGauges, create, create_worker_gauges
from .multiprocess import mark_process_dead
from .middleware import request_path
from .native_values import VALUE_ONLY_FILES, enable_native_values

logger = logging.getLogger("gunicorn_prometheus_exporter")
F = TypeVar("F", bound=Callable[..., Any])

COUNTED_SIGNALS = ("hup", "ttin", "ttou", "usr1", "usr2", "winch", "term", "int", "quit", "chld")


@dataclass
class _State:
    """What the hooks of one process share (hooks are plain functions)."""

    metrics: Metrics | None = None
    directory: str | None = None
    redis_password: str | None = None
    supervisor: AgentSupervisor | None = None
    stopping: bool = False
    reload_pids: set[int] = field(default_factory=set)
    scale_down_pids: set[int] = field(default_factory=set)
    # worker side
    recorder: Any = None
    sampler: Any = None
    worker_gauges: WorkerGauges | None = None
    middleware: bool = False  # requests are recorded by a wrapper of the app, not the hooks
    aborted: bool = False


_state = _State()


_failed_hooks: set[str] = set()  # hooks whose failure this process logged already


def _guarded(hook: F) -> F:
    """Metrics never take Gunicorn down: an exception out of a hook of ours
    is logged (with the traceback the first time, per hook and process) and
    goes no further."""
    name = hook.__name__.lstrip("_")

    @functools.wraps(hook)
    def guarded(*args: Any) -> Any:
        try:
            return hook(*args)
        except Exception:
            if name not in _failed_hooks:
                _failed_hooks.add(name)
                logger.exception("metrics hook %s failed; Gunicorn carries on (further failures of it are "
                                 "logged at debug level)", name)
            else:
                logger.debug("metrics hook %s failed again", name, exc_info=True)
            return None

    return guarded  # type: ignore[return-value]


def _exit_marker(pid: int) -> Path:
    assert _state.directory is not None
    return Path(_state.directory) / f".exit-{pid}"


# ---------------------------------------------------------------- master ----

def on_starting(server: Any) -> None:
    """Master, before anything: settings checked, directory ready, values native."""
    config.validate()  # an invalid setting stops Gunicorn here, named (not a metrics failure)
    if _state.redis_password is None:
        _state.redis_password = _take_redis_password()  # first: whatever fails later
    _on_starting(server)


@_guarded
def _on_starting(server: Any) -> None:
    upgrade = "GUNICORN_PID" in os.environ
    _state.directory = directory.prepare_master()
    if directory.is_private(_state.directory):
        # A USR2 upgrade starts the new master with the environment Gunicorn
        # saved at start: it must get the same directory, and own it.
        env_orig = getattr(getattr(server, "cfg", None), "env_orig", None)
        if isinstance(env_orig, dict):
            env_orig["PROMETHEUS_MULTIPROC_DIR"] = _state.directory
            env_orig[directory.OWNED_DIRECTORY] = _state.directory
    _state.metrics = create()
    _native.count_storage_errors_in(_state.metrics.storage_errors._value)
    install_missing_hooks(server)
    logger.info("metrics directory %s%s", _state.directory, " (binary upgrade)" if upgrade else "")


def _take_redis_password() -> str | None:
    """The Redis password, taken out of this process's environment: workers
    and the agent must not inherit it (the agent gets it through a pipe).
    Zeroed in the environment block too (what /proc/PID/environ shows and
    forked workers inherit), not only unset. PROMETHEUS_REDIS_URL keeps its
    place without the password; as elsewhere, the URL's wins."""
    password = os.environ.get("REDIS_PASSWORD")
    if password is not None:
        _native.scrub_environment_variable("REDIS_PASSWORD")
        os.environ.pop("REDIS_PASSWORD", None)
    url = os.environ.get("PROMETHEUS_REDIS_URL")
    if url:
        in_url = _native.parse_redis_url(url).get("password") or None
        if in_url is not None:
            without = url_without_password(url)
            _native.scrub_environment_variable("PROMETHEUS_REDIS_URL")
            os.environ["PROMETHEUS_REDIS_URL"] = without
            password = in_url
    return password


def url_without_password(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``)
    removed and everything else kept; ValueError if that cannot be done."""
    scheme, sep, rest = url.partition("://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        user = rest[:at].split(":", 1)[0]
        rest = (user + "@" if user else "") + rest[at + 1:]
    path, qmark, query = rest.partition("?")
    kept = [pair for pair in query.split("&") if pair and not pair.startswith("password=")]
    without = scheme + sep + path + ("?" + "&".join(kept) if kept else "")
    before, after = _native.parse_redis_url(url), _native.parse_redis_url(without)
    if after.get("password") or {**before, "password": ""} != {**after, "password": ""}:
        raise ValueError("PROMETHEUS_REDIS_URL: cannot take the password out of the URL; give it in "
                         "REDIS_PASSWORD instead")
    return without


def install_missing_hooks(server: Any) -> None:
    """Every hook of ours that the configuration left at Gunicorn's default
    is installed (a 0.2.x configuration names only a few of them); hooks of
    the user's own are kept (they call ours, see the module docstring)."""
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
            worker_class.__module__, worker_class.__qualname__)


def _count_signals(server: Any) -> None:
    metrics = _state.metrics
    assert metrics is not None
    for name in COUNTED_SIGNALS:
        original = getattr(server, f"handle_{name}", None)
        if original is None or getattr(original, "_gpe_counted", False):
            continue

        def handler(original: Any = original, name: str = name) -> Any:
            metrics.master_signals.labels(name.upper()).inc()
            if name in ("term", "int", "quit"):
                _state.stopping = True
            if name == "ttou":
                before = set(server.WORKERS)
                result = original()
                _state.scale_down_pids |= before - set(server.WORKERS) | _killed_oldest(server, before)
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


def _agent_args(server: Any) -> tuple[list[str], dict[str, str]]:
    args = ["--directory", _state.directory or "", "--source", "files",
            "--bind", config.prometheus_bind_address, "--port", str(config.prometheus_metrics_port),
            "--parent-pid", str(os.getpid())]
    for flag, value in (("--certfile", config.prometheus_ssl_certfile),
                        ("--keyfile", config.prometheus_ssl_keyfile),
                        ("--client-cafile", config.prometheus_ssl_client_cafile),
                        ("--client-capath", config.prometheus_ssl_client_capath)):
        if value:
            args += [flag, value]
    if config.prometheus_ssl_client_auth_required:
        args.append("--client-auth-required")
    if "GUNICORN_PID" in os.environ:
        args.append("--upgrade")
    if VALUE_ONLY_FILES:
        args.append("--value-only-files")  # prometheus_client <= 0.17
    if config.redis_enabled:
        args += ["--mirror", "--redis-prefix", config.redis_key_prefix,
                 "--redis-instance", config.redis_instance_id,
                 "--redis-ttl", "0" if config.redis_ttl_disabled else str(config.redis_ttl_seconds),
                 "--flush-interval", str(config.redis_flush_interval)]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    return args, env


def when_ready(server: Any) -> None:
    """Master, listening: count signals, start the agent."""
    start_master_metrics(server, serve_http=True)


def start_master_metrics(server: Any, serve_http: bool) -> None:
    """when_ready's work; ``serve_http`` False: the agent only mirrors to
    Redis, for a sidecar that serves the metrics."""
    if _state.metrics is None:  # on_starting was not configured: its checks stop Gunicorn
        on_starting(server)
    _start_agent(server, serve_http)


@_guarded
def _start_agent(server: Any, serve_http: bool) -> None:
    metrics = _state.metrics
    if metrics is None:
        return
    _count_signals(server)
    _warn_if_uninstrumented(server)
    metrics.master_workers.set(len(server.WORKERS))  # more as they are forked (pre_fork)
    args, env = _agent_args(server)
    if not serve_http:
        if not config.redis_enabled:
            logger.warning("no metrics agent: it would neither serve /metrics nor mirror (REDIS_ENABLED is off)")
            return
        args.append("--no-http")
    password = _state.redis_password if config.redis_enabled else None
    _state.supervisor = AgentSupervisor(args, env, password)
    _state.supervisor.start()
    if "GUNICORN_PID" in os.environ:
        _watch_old_master(int(os.environ["GUNICORN_PID"]))


def _watch_old_master(pid: int) -> None:
    """After a USR2 upgrade: when the old master is gone, its live gauges go."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(1)
        if _state.directory:
            mark_process_dead(pid, _state.directory)

    threading.Thread(target=watch, name="gunicorn-prometheus-old-master", daemon=True).start()


def _restart_reason(server: Any, worker: Any) -> str | None:
    pid = worker.pid
    marker = _exit_marker(pid)
    reported = None
    try:
        reported = marker.read_text().strip() or None
        marker.unlink()
    except OSError:
        pass
    if _state.stopping:
        return None  # shutting down: not a restart
    if getattr(worker, "aborted", False) or reported == "timeout":
        return "timeout"
    if pid in _state.reload_pids:
        return "reload"
    if pid in _state.scale_down_pids:
        return "scale_down"
    if reported in ("max_requests", "graceful"):
        return reported
    return "crash"  # killed (e.g. out of memory) or died without a word


@_guarded
def child_exit(server: Any, worker: Any) -> None:
    """Master, a worker is gone: count the restart, archive its metrics."""
    metrics = _state.metrics
    if metrics is None or _state.directory is None:
        return
    reason = _restart_reason(server, worker)
    if reason is not None:
        metrics.master_worker_restart.labels(reason).inc()
    _state.reload_pids.discard(worker.pid)
    _state.scale_down_pids.discard(worker.pid)
    metrics.master_workers.set(len(server.WORKERS))  # reaped: no longer among them
    mark_process_dead(worker.pid, _state.directory)


@_guarded
def pre_fork(server: Any, worker: Any) -> None:
    """Master, about to fork a worker: one more alive."""
    if _state.metrics is not None:
        _state.metrics.master_workers.set(len(server.WORKERS) + 1)


@_guarded
def on_reload(server: Any) -> None:
    """Master, HUP: the workers running now will be replaced."""
    _state.reload_pids |= set(server.WORKERS)


@_guarded
def on_exit(server: Any) -> None:
    """Master, leaving: stop the agent, remove a directory of ours."""
    _state.stopping = True
    if _state.supervisor is not None:
        _state.supervisor.stop()
        _state.supervisor = None
    directory.release(successor=bool(getattr(server, "reexec_pid", 0)))


# ---------------------------------------------------------------- worker ----

def _histogram_spec(child: Any) -> tuple[list[float], list[Any], Any]:
    return list(child._upper_bounds), list(child._buckets), child._sum


def _set_state(state: str) -> None:
    gauges = _state.worker_gauges
    if gauges is not None:
        for name in WORKER_STATES:
            gauges.state.labels(name).set(1 if name == state else 0)


@_guarded
def post_fork(server: Any, worker: Any) -> None:
    """Worker, after fork: request recorder, resource sampler, error counter."""
    metrics = _state.metrics
    if metrics is None:
        return
    _state.aborted = False
    methods = []
    for method in METHODS:
        methods.append((
            method,
            [metrics.worker_requests.labels(method, status)._value for status in STATUS_CLASSES],
            metrics.worker_failed_requests.labels(method)._value,
            _histogram_spec(metrics.worker_request_duration.labels(method)),
        ))
    _state.recorder = _native.RequestRecorder(
        methods, _histogram_spec(metrics.worker_request_size), _histogram_spec(metrics.worker_response_size))
    gauges = create_worker_gauges(metrics.registry)  # in the worker: the master has no such series
    _state.worker_gauges = gauges
    _state.sampler = _native.ResourceSampler(
        gauges.memory._value, gauges.cpu._value, gauges.open_fds._value, gauges.threads._value,
        gauges.uptime._value, config.resource_sample_interval)
    _set_state("running")
    _wrap_handle_error(worker)


def _wrap_handle_error(worker: Any) -> None:
    original = worker.handle_error
    errors = _state.metrics.worker_error_handling if _state.metrics else None

    def handle_error(req: Any, client: Any, addr: Any, exc: BaseException) -> Any:
        try:
            status = _error_status(exc)
            if errors is not None:
                errors.labels(str(status)).inc()
            if req is None and _state.recorder is not None:
                # Answered before any hook saw a request (a malformed one).
                _state.recorder.record("other", status, 0.0, 0.0, 0.0, status >= 500)
        except Exception:  # metrics never break error handling
            logger.debug("could not count an error", exc_info=True)
        return original(req, client, addr, exc)

    worker.handle_error = handle_error


def _error_status(exc: BaseException) -> int:
    from gunicorn.http import errors

    for name, status in (("LimitRequestLine", 414), ("LimitRequestHeaders", 431),
                         ("ForbiddenProxyRequest", 403), ("UnsupportedTransferCoding", 501),
                         ("ExpectationFailed", 417)):
        cls = getattr(errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    client_errors = tuple(getattr(errors, n) for n in (
        "InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion", "InvalidHeader",
        "InvalidHeaderName", "InvalidProxyLine", "InvalidSchemeHeaders", "ObsoleteFolding",
        "InvalidChunkSize", "ChunkMissingTerminator", "InvalidChunkExtension") if hasattr(errors, n))
    return 400 if isinstance(exc, client_errors) else 500


@_guarded
def post_worker_init(worker: Any) -> None:
    """Worker, app loaded: wrap the app where requests bypass the hooks."""
    recorder = _state.recorder
    if recorder is None:
        return
    from .middleware import ASGIRecorder, WSGIRecorder, is_asgi3

    errors = _state.metrics.worker_error_handling.labels("500") if _state.metrics else None

    def on_error() -> None:
        if errors is not None:
            errors.inc()

    path = request_path(type(worker))
    app: Any = getattr(worker, "asgi" if path == "gunicorn-asgi" else "wsgi", None)
    if app is None:
        return
    if path == "gunicorn-asgi":
        worker.asgi = ASGIRecorder(app, recorder, on_error)  # post_request gets no response
    elif path == "asgi" and is_asgi3(app):
        worker.wsgi = ASGIRecorder(app, recorder, on_error)  # uvicorn serves it, no hooks
    elif path == "wsgi" and not type(app).__module__.startswith("tornado"):
        worker.wsgi = WSGIRecorder(app, recorder, on_error)  # their servers skip the hooks
    elif path == "hooks":
        # Recorded by the wrapper too, as soon as the outcome is known: the
        # hooks run after the response was sent, so a worker killed between
        # the two would lose a request its client received. Gunicorn counts
        # a raising app in handle_error itself.
        worker.wsgi = WSGIRecorder(app, recorder, lambda: None)
    else:
        if path is not None:
            logger.warning("requests of this worker are not counted: %r is not an app the exporter can "
                           "wrap (ASGI 3 for uvicorn's workers, WSGI for gevent_pywsgi and tornado)", app)
        return
    _state.middleware = True


@_guarded
def pre_request(worker: Any, req: Any) -> None:
    if _state.middleware:
        return  # the app's wrapper times the request
    try:
        req._gpe_start = time.perf_counter()
    except AttributeError:  # a request object without attributes of ours
        pass


def _status_code(resp: Any) -> int:
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    status = getattr(resp, "status", None)
    if isinstance(status, int):
        return status
    if isinstance(status, (str, bytes)):
        text = status.decode() if isinstance(status, bytes) else status
        head = text.split(None, 1)[0] if text.strip() else ""
        if head.isdigit():
            return int(head)
    return 0


def _request_bytes(req: Any, environ: Any) -> float:
    length = environ.get("CONTENT_LENGTH") if isinstance(environ, dict) else None
    if length is None:
        for name, value in getattr(req, "headers", ()) or ():
            if str(name).upper() == "CONTENT-LENGTH":
                length = value
                break
    try:
        return float(length) if length else 0.0
    except (TypeError, ValueError):
        return 0.0


@_guarded
def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Worker, a request is done: one native call records it."""
    recorder = _state.recorder
    if recorder is None or _state.middleware:
        return
    start = getattr(req, "_gpe_start", None)
    duration = time.perf_counter() - start if start is not None else 0.0
    # No status: the application raised before answering, Gunicorn answers 500.
    status = _status_code(resp) if resp is not None else 0
    raised = status == 0
    sent = getattr(resp, "sent", None) or getattr(resp, "response_length", None) or 0
    recorder.record(getattr(req, "method", "other") or "other", status or 500, duration,
                    _request_bytes(req, environ), float(sent), raised)


@_guarded
def worker_abort(worker: Any) -> None:
    """Worker, killed for a timeout (SIGABRT)."""
    _state.aborted = True
    _report_exit(worker, "timeout")


def _report_exit(worker: Any, reason: str) -> None:
    if _state.directory is None:
        return
    try:
        _exit_marker(os.getpid()).write_text(reason)
    except OSError:
        pass
    if _state.metrics is not None:
        _state.metrics.worker_restart.labels(reason).inc()


@_guarded
def worker_exit(server: Any, worker: Any) -> None:
    """Worker, leaving: say why, for the master's restart count."""
    _set_state("stopping")
    if _state.sampler is not None:
        _state.sampler.stop()
    if _state.aborted:
        return  # already reported by worker_abort
    max_requests = getattr(worker, "max_requests", 0) or 0
    reached = max_requests and getattr(worker, "nr", 0) >= max_requests
    _report_exit(worker, "max_requests" if reached else "graceful")


HOOKS = {
    "on_starting": on_starting,
    "when_ready": when_ready,
    "child_exit": child_exit,
    "pre_fork": pre_fork,
    "post_worker_init": post_worker_init,
    "on_reload": on_reload,
    "on_exit": on_exit,
    "post_fork": post_fork,
    "pre_request": pre_request,
    "post_request": post_request,
    "worker_abort": worker_abort,
    "worker_exit": worker_exit,
}


def instrument_worker(worker: Any) -> None:
    """For the 0.2.x worker classes: what post_fork and the request hooks do,
    when the Gunicorn config did not install our hooks."""
    if _state.recorder is not None:
        return  # post_fork ran
    if _state.metrics is None:
        directory = config.prometheus_multiproc_dir
        if directory is None or not os.path.isdir(directory):
            logger.warning("worker metrics off: PROMETHEUS_MULTIPROC_DIR is not set to a directory")
            return
        _state.directory = directory
        enable_native_values(directory)
        _state.metrics = create()
    post_fork(None, worker)
    settings = getattr(worker.cfg, "settings", {})
    for name, hook in (("post_worker_init", post_worker_init), ("pre_request", pre_request),
                       ("post_request", post_request)):
        setting = settings.get(name)
        if setting is not None and getattr(worker.cfg, name) is setting.default:
            worker.cfg.set(name, hook)


# The hook names of gunicorn-prometheus-exporter 0.2.x (at the end: they call the hooks above).
from .legacy import (  # noqa: E402
    default_on_exit,
    default_on_starting,
    default_post_fork,
    default_when_ready,
    default_worker_int,
    load_yaml_config,
    redis_sidecar_when_ready,
    redis_when_ready,
)

__all__ = [*HOOKS, "instrument_worker", "install_missing_hooks", "default_on_exit", "default_on_starting",
           "default_post_fork", "default_when_ready", "default_worker_int", "load_yaml_config",
           "redis_sidecar_when_ready", "redis_when_ready"]
