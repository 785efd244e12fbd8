"""The worker-side Gunicorn hooks (post_fork, post_worker_init, pre_request,
post_request, worker_abort, worker_exit): each worker's request recorder,
resource sampler and exit report. They run in the workers; the master only
hands over, before forking, the metrics and directory its workers inherit
(:func:`inherit`). Also the instrumentation of 0.2.x worker classes run
without our hooks (:func:`instrument_worker`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from . import _native
from ._logging import logger
from .config import config
from .directory import report_exit
from .guard import guarded
from .metrics import (
    ERROR_STATUSES,
    METHODS,
    STATUS_CLASSES,
    WORKER_EXIT_REASONS,
    WORKER_STATES,
    Metrics,
    WorkerGauges,
    create,
    create_worker_gauges,
)
from .middleware import ASGIRecorder, is_asgi3, request_path, wsgi_recorder
from .native_values import enable_native_values
from .outcome import error_status, request_bytes, response_status


@dataclass
class _Worker:
    """What the worker-side hooks of this process share (hooks are plain
    functions)."""

    metrics: Metrics | None = None  # the master's, inherited at fork
    directory: str | None = None
    recorder: Any = None
    sampler: Any = None
    gauges: WorkerGauges | None = None
    middleware: bool = False  # requests are recorded by a wrapper of the app, not the hooks
    aborted: bool = False


_worker = _Worker()  # per process by nature: each worker has its own after fork


def inherit(metrics: Metrics, directory: str) -> None:
    """The master's metrics and directory, for the workers it forks."""
    _worker.metrics = metrics
    _worker.directory = directory


def _histogram_spec(child: Any) -> tuple[list[float], list[Any], Any]:
    return list(child._upper_bounds), list(child._buckets), child._sum


def _set_state(state: str) -> None:
    gauges = _worker.gauges
    if gauges is not None:
        for name in WORKER_STATES:
            gauges.state.labels(name).set(1 if name == state else 0)


@guarded
def post_fork(server: Any, worker: Any) -> None:
    """Worker, after fork: request recorder, resource sampler, error counter."""
    metrics = _worker.metrics
    if metrics is None:
        return
    _worker.aborted = False
    _worker.recorder = _make_recorder(metrics)
    for reason in WORKER_EXIT_REASONS:  # at 0 before the first event
        metrics.worker_restart.labels(reason)
    for status in ERROR_STATUSES:
        metrics.worker_error_handling.labels(status)
    gauges = create_worker_gauges(metrics.registry)  # in the worker: the master has no such series
    _worker.gauges = gauges
    _worker.sampler = _native.ResourceSampler(
        gauges.memory._value,
        gauges.cpu._value,
        gauges.open_fds._value,
        gauges.threads._value,
        gauges.uptime._value,
        config.resource_sample_interval,
        cpu_seconds_total=metrics.worker_cpu_seconds._value,
        start_time_seconds=gauges.start_time._value,
    )
    _set_state("running")
    _count_handled_errors(worker, metrics)


def _make_recorder(metrics: Metrics) -> Any:
    """The native recorder: with exact status codes, a code's series is made
    at its first request (at most 500 per method); status classes all at 0."""
    by_code = config.status_label == "code"
    requests = metrics.worker_requests
    methods = [
        (
            method,
            [None] * len(STATUS_CLASSES)
            if by_code
            else [requests.labels(method, status)._value for status in STATUS_CLASSES],
            metrics.worker_failed_requests.labels(method)._value,
            _histogram_spec(metrics.worker_request_duration.labels(method)),
        )
        for method in METHODS
    ]

    def code_counter(method: int, status: str) -> Any:
        return requests.labels(METHODS[method], status)._value

    return _native.RequestRecorder(
        methods,
        _histogram_spec(metrics.worker_request_size),
        _histogram_spec(metrics.worker_response_size),
        in_flight=metrics.worker_in_flight._value,
        busy=metrics.workers_busy._value,
        by_code=code_counter if by_code else None,
    )


def _count_handled_errors(worker: Any, metrics: Metrics) -> None:
    original = worker.handle_error
    errors = metrics.worker_error_handling

    def handle_error(req: Any, client: Any, addr: Any, exc: BaseException) -> Any:
        try:
            status = error_status(exc)
            errors.labels(str(status)).inc()
            if req is None and _worker.recorder is not None:
                # Answered before any hook saw a request (a malformed one).
                _worker.recorder.start()
                _worker.recorder.record("other", status, 0.0, 0.0, 0.0, status >= 500)
        except Exception:  # metrics never break error handling
            logger.debug("could not count an error", exc_info=True)
        return original(req, client, addr, exc)

    worker.handle_error = handle_error


@guarded
def post_worker_init(worker: Any) -> None:
    """Worker, app loaded: wrap the app where requests bypass the hooks."""
    recorder, metrics = _worker.recorder, _worker.metrics
    if recorder is None or metrics is None:
        return
    errors = metrics.worker_error_handling.labels("500")
    path = request_path(type(worker))
    app: Any = getattr(worker, "asgi" if path == "gunicorn-asgi" else "wsgi", None)
    if app is None:
        return
    if path == "gunicorn-asgi":
        worker.asgi = ASGIRecorder(app, recorder, errors.inc)  # post_request gets no response
    elif path == "asgi" and is_asgi3(app):
        worker.wsgi = ASGIRecorder(app, recorder, errors.inc)  # uvicorn serves it, no hooks
    elif path == "wsgi" and not type(app).__module__.startswith("tornado"):
        worker.wsgi = wsgi_recorder(app, recorder, errors.inc)  # their servers skip the hooks
    elif path == "hooks":
        # Recorded by the wrapper too, as soon as the outcome is known: the
        # hooks run after the response was sent, so a worker killed between
        # the two would lose a request its client received. Gunicorn counts
        # a raising app in handle_error itself.
        worker.wsgi = wsgi_recorder(app, recorder, None)
    else:
        if path is not None:
            logger.warning(
                "requests of this worker are not counted: %r is not an app the exporter can "
                "wrap (ASGI 3 for uvicorn's workers, WSGI for gevent_pywsgi and tornado)",
                app,
            )
        return
    _worker.middleware = True
    _drop_idle_request_hooks(worker)


def _drop_idle_request_hooks(worker: Any) -> None:
    """The wrapper records every request now, so our pre_request and
    post_request would only return: this worker runs Gunicorn's own
    pre_request in their place at log level debug (it logs each request),
    else hooks that do nothing (a Python call a hook, not two). A hook of
    the user's, even one that calls ours, stays."""
    settings = getattr(worker.cfg, "settings", {})
    debug = str(getattr(worker.cfg, "loglevel", "")).lower() == "debug"
    idle = {"pre_request": _idle_pre_request, "post_request": _idle_post_request}
    for name, hook in idle.items():
        setting = settings.get(name)
        if setting is not None and getattr(worker.cfg, name) is HOOKS[name]:
            # Gunicorn's post_request does nothing; its pre_request logs at debug.
            worker.cfg.set(name, setting.default if debug else hook)


def _idle_pre_request(worker: Any, req: Any) -> None:
    """pre_request while the app's wrapper records the requests."""


def _idle_post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """post_request while the app's wrapper records the requests."""


@guarded
def pre_request(worker: Any, req: Any) -> None:
    if _worker.middleware or _worker.recorder is None:
        return  # the app's wrapper times the request
    try:
        req._gpe_start = time.perf_counter()
    except AttributeError:  # a request object without attributes of ours
        pass
    _worker.recorder.start()


@guarded
def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Worker, a request is done: one native call records it."""
    recorder = _worker.recorder
    if recorder is None or _worker.middleware:
        return
    start = getattr(req, "_gpe_start", None)
    duration = time.perf_counter() - start if start is not None else 0.0
    sent = getattr(resp, "sent", None) or getattr(resp, "response_length", None) or 0
    recorder.record(
        getattr(req, "method", "other") or "other",
        response_status(resp),
        duration,
        request_bytes(environ, getattr(req, "headers", None)),
        float(sent),
        False,
    )


@guarded
def worker_abort(worker: Any) -> None:
    """Worker, killed for a timeout (SIGABRT)."""
    _worker.aborted = True
    _report_exit("timeout")


def _report_exit(reason: str) -> None:
    if _worker.directory is None:
        return
    report_exit(_worker.directory, os.getpid(), reason)
    if _worker.metrics is not None:
        _worker.metrics.worker_restart.labels(reason).inc()


@guarded
def worker_exit(server: Any, worker: Any) -> None:
    """Worker, leaving: say why, for the master's restart count."""
    _set_state("stopping")
    if _worker.sampler is not None:
        _worker.sampler.sample()  # the CPU used since the last sample counts too
        _worker.sampler.stop()
    if _worker.aborted:
        return  # already reported by worker_abort
    max_requests = getattr(worker, "max_requests", 0) or 0
    reached = max_requests and getattr(worker, "nr", 0) >= max_requests
    _report_exit("max_requests" if reached else "graceful")


HOOKS = {
    "post_fork": post_fork,
    "post_worker_init": post_worker_init,
    "pre_request": pre_request,
    "post_request": post_request,
    "worker_abort": worker_abort,
    "worker_exit": worker_exit,
}


def instrument_worker(worker: Any) -> None:
    """For the 0.2.x worker classes: what post_fork and the request hooks do,
    when the Gunicorn config did not install our hooks."""
    if _worker.recorder is not None:
        return  # post_fork ran
    if _worker.metrics is None:
        directory = config.prometheus_multiproc_dir
        if directory is None or not os.path.isdir(directory):
            logger.warning("worker metrics off: PROMETHEUS_MULTIPROC_DIR is not set to a directory")
            return
        enable_native_values(directory)
        inherit(create(), directory)
    post_fork(None, worker)
    settings = getattr(worker.cfg, "settings", {})
    for name in ("post_worker_init", "pre_request", "post_request"):
        setting = settings.get(name)
        if setting is not None and getattr(worker.cfg, name) is setting.default:
            worker.cfg.set(name, HOOKS[name])
