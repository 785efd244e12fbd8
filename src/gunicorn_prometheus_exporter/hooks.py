"""Gunicorn server hooks: metrics for every worker type, the agent, dead
worker bookkeeping. This module is their public home; they live in
:mod:`.master_hooks` (on_starting, when_ready, pre_fork, child_exit,
on_reload, on_exit: they run in the master) and :mod:`.worker_hooks`
(post_fork, post_worker_init, pre_request, post_request, worker_abort,
worker_exit: they run in each worker). The 0.2.x hook names are here too
(:mod:`.legacy`).

Use them through ``gunicorn_prometheus_exporter.gunicorn_config`` (see the
README); to keep hooks of your own, call ours from yours.
"""

from __future__ import annotations

from .legacy import (
    default_on_exit,
    default_on_starting,
    default_post_fork,
    default_when_ready,
    default_worker_int,
    load_yaml_config,
    redis_sidecar_when_ready,
    redis_when_ready,
)
from .master_hooks import (
    COUNTED_SIGNALS,
    HOOKS,
    child_exit,
    install_missing_hooks,
    on_exit,
    on_reload,
    on_starting,
    pre_fork,
    start_master_metrics,
    when_ready,
)
from .redis_password import url_without_password
from .worker_hooks import (
    instrument_worker,
    post_fork,
    post_request,
    post_worker_init,
    pre_request,
    worker_abort,
    worker_exit,
)

__all__ = [
    "COUNTED_SIGNALS",
    "HOOKS",
    "child_exit",
    "default_on_exit",
    "default_on_starting",
    "default_post_fork",
    "default_when_ready",
    "default_worker_int",
    "install_missing_hooks",
    "instrument_worker",
    "load_yaml_config",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "post_request",
    "post_worker_init",
    "pre_fork",
    "pre_request",
    "redis_sidecar_when_ready",
    "redis_when_ready",
    "start_master_metrics",
    "url_without_password",
    "when_ready",
    "worker_abort",
    "worker_exit",
]
