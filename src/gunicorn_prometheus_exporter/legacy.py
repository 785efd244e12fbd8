"""The hooks of gunicorn-prometheus-exporter 0.2.x under their old names, so
that a 0.2.x ``gunicorn.conf.py`` runs unchanged. Each does what its 0.2.x
namesake did, with this exporter's machinery: the metrics server is the
agent, Redis storage is the agent's mirror. Whichever of them runs first in
the master also installs every other hook of ours that the configuration
left unset (a 0.2.x configuration names only a few), so the metrics are
complete. Re-exported by ``gunicorn_prometheus_exporter.hooks``.
"""

from __future__ import annotations

from typing import Any

from . import master_hooks, worker_hooks
from ._logging import logger
from .config import load_yaml_config as _load_yaml_config


def default_on_starting(server: Any) -> None:
    """0.2.x: initialise master metrics and the multiprocess directory."""
    master_hooks.on_starting(server)


def default_when_ready(server: Any) -> None:
    """0.2.x: start the metrics server (here: the agent on PROMETHEUS_METRICS_PORT)."""
    master_hooks.when_ready(server)


def redis_when_ready(server: Any) -> None:
    """0.2.x: the metrics server with Redis storage. Storage follows
    REDIS_ENABLED, as in 0.2.x: the agent mirrors to Redis when it is on."""
    master_hooks.when_ready(server)


def redis_sidecar_when_ready(server: Any) -> None:
    """0.2.x: Redis storage without a metrics server in the app's container
    (a sidecar serves them): the agent only mirrors to Redis."""
    master_hooks.start_master_metrics(server, serve_http=False)


def default_post_fork(server: Any, worker: Any) -> None:
    """0.2.x: per-worker set-up after fork (here: the request recorder and the
    resource sampler)."""
    worker_hooks.post_fork(server, worker)


def default_worker_int(worker: Any) -> None:
    """0.2.x: refresh the worker's metrics on SIGINT/SIGQUIT. Ours are always
    current (an update is a store into shared memory), so there is nothing
    to flush; the exit is recorded by worker_exit."""
    logger.debug("worker %s interrupted", getattr(worker, "pid", "?"))


def default_on_exit(server: Any) -> None:
    """0.2.x: clean up when the master leaves (here: stop the agent, remove a
    private directory)."""
    master_hooks.on_exit(server)


def load_yaml_config(config_file_path: str) -> None:
    """0.2.x's ``hooks.load_yaml_config``: apply a YAML configuration file."""
    _load_yaml_config(config_file_path)
