"""The exporter's metrics: names of gunicorn-prometheus-exporter 0.2.x with
their meaning, plus what operators need. Every label has a bounded set of
values (methods and status classes are fixed lists; no paths, pids, times).

They live in their own registry (not prometheus_client's default one): the
agent renders them from the multiprocess files together with the app's own
metrics. Create them with ``create()`` once native values are on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
WORKER_STATES = ("booting", "running", "stopping")
# Known label values: each counter's series are made at 0 before their first
# event (alerts then need no ``or vector(0)``).
WORKER_EXIT_REASONS = ("graceful", "max_requests", "timeout")
MASTER_RESTART_REASONS = ("graceful", "timeout", "crash", "max_requests", "reload", "scale_down")
MASTER_SIGNALS = ("HUP", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "TERM", "INT", "QUIT", "CHLD")
ERROR_STATUSES = ("400", "403", "414", "417", "431", "500", "501")  # outcome.error_status
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)


@dataclass
class Metrics:
    registry: CollectorRegistry
    worker_requests: Counter
    worker_failed_requests: Counter
    worker_request_duration: Histogram
    worker_request_size: Histogram
    worker_response_size: Histogram
    worker_error_handling: Counter
    worker_in_flight: Gauge
    workers_busy: Gauge
    worker_cpu_seconds: Counter
    worker_restart: Counter
    master_worker_restart: Counter
    master_workers: Gauge
    master_workers_configured: Gauge
    master_listen_backlog: Gauge
    master_signals: Counter
    build_info: Gauge
    storage_errors: Counter


@dataclass
class WorkerGauges:
    """Per-worker gauges (pid label, gone with the worker); created in each
    worker, so that the master has no series of its own among them."""

    memory: Gauge
    cpu: Gauge
    uptime: Gauge
    start_time: Gauge
    open_fds: Gauge
    threads: Gauge
    state: Gauge


def _per_worker(r: CollectorRegistry, name: str, documentation: str, *labels: str) -> Gauge:
    return Gauge(name, documentation, labels, multiprocess_mode="liveall", registry=r)


def create_worker_gauges(r: CollectorRegistry) -> WorkerGauges:
    return WorkerGauges(
        memory=_per_worker(r, "gunicorn_worker_memory_bytes", "Resident memory of each worker"),
        cpu=_per_worker(
            r,
            "gunicorn_worker_cpu_percent",
            "Deprecated: use gunicorn_worker_cpu_seconds_total. "
            "CPU use of each worker since the last sample, in percent",
        ),
        uptime=_per_worker(
            r,
            "gunicorn_worker_uptime_seconds",
            "Deprecated: use gunicorn_worker_start_time_seconds. Seconds since each worker started",
        ),
        start_time=_per_worker(
            r,
            "gunicorn_worker_start_time_seconds",
            "Start time of each worker, in seconds since the epoch",
        ),
        open_fds=_per_worker(r, "gunicorn_worker_open_fds", "Open file descriptors of each worker"),
        threads=_per_worker(r, "gunicorn_worker_threads", "Threads of each worker"),
        state=_per_worker(r, "gunicorn_worker_state", "1 for the state each worker is in", "state"),
    )


def create() -> Metrics:
    r = CollectorRegistry()
    return Metrics(registry=r, **_request_metrics(r), **_process_metrics(r))


def _request_metrics(r: CollectorRegistry) -> dict[str, Any]:
    # #lizard forgives: a declaration table, one metric per statement
    return dict(
        worker_requests=Counter(
            "gunicorn_worker_requests",
            "Requests handled by workers, by method and status (class, or code)",
            ["method", "status"],
            registry=r,
        ),
        worker_failed_requests=Counter(
            "gunicorn_worker_failed_requests",
            "Requests whose handler raised or that were answered 5xx",
            ["method"],
            registry=r,
        ),
        worker_request_duration=Histogram(
            "gunicorn_worker_request_duration_seconds",
            "Time to handle a request",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=r,
        ),
        worker_request_size=Histogram(
            "gunicorn_worker_request_size_bytes",
            "Request body sizes (Content-Length)",
            buckets=SIZE_BUCKETS,
            registry=r,
        ),
        worker_response_size=Histogram(
            "gunicorn_worker_response_size_bytes",
            "Response body sizes",
            buckets=SIZE_BUCKETS,
            registry=r,
        ),
        worker_error_handling=Counter(
            "gunicorn_worker_error_handling",
            "Errors answered by Gunicorn itself, by status",
            ["status"],
            registry=r,
        ),
        worker_in_flight=Gauge(
            "gunicorn_worker_requests_in_flight",
            "Requests being handled now",
            multiprocess_mode="livesum",
            registry=r,
        ),
        workers_busy=Gauge(
            "gunicorn_workers_busy",
            "Workers handling at least one request now",
            multiprocess_mode="livesum",
            registry=r,
        ),
    )


def _process_metrics(r: CollectorRegistry) -> dict[str, Any]:
    # #lizard forgives: a declaration table, one metric per statement
    return dict(
        worker_cpu_seconds=Counter(
            "gunicorn_worker_cpu_seconds",
            "CPU time (user and system) of all workers, exited ones included",
            registry=r,
        ),
        worker_restart=Counter(
            "gunicorn_worker_restart",
            "Worker exits as the worker saw them, by reason",
            ["reason"],
            registry=r,
        ),
        master_worker_restart=Counter(
            "gunicorn_master_worker_restart",
            "Worker restarts seen by the master, by reason",
            ["reason"],
            registry=r,
        ),
        master_workers=Gauge(
            "gunicorn_master_workers", "Workers alive", multiprocess_mode="livesum", registry=r
        ),
        master_workers_configured=Gauge(
            "gunicorn_master_workers_configured",
            "Workers the master is configured to run (follows TTIN and TTOU)",
            multiprocess_mode="livesum",
            registry=r,
        ),
        master_listen_backlog=Gauge(
            "gunicorn_master_listen_backlog",
            "Connections waiting to be accepted on the master's TCP listeners",
            multiprocess_mode="livesum",
            registry=r,
        ),
        master_signals=Counter(
            "gunicorn_master_signals", "Signals handled by the master", ["signal"], registry=r
        ),
        # Only the master writes it (1): livemax shows it once, not per process.
        build_info=Gauge(
            "gunicorn_exporter_build_info",
            "Versions of the exporter, Gunicorn and Python, value 1",
            ["version", "gunicorn_version", "python_version"],
            multiprocess_mode="livemax",
            registry=r,
        ),
        storage_errors=Counter(
            "gunicorn_exporter_storage_errors",
            "Values that could not be stored in the multiprocess "
            "directory (a full filesystem, ...): they stay exact in their process's memory only",
            registry=r,
        ),
    )
