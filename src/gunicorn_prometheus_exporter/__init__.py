"""Prometheus exporter for Gunicorn with a native (C++) multiprocess core.

Importing this package with ``PROMETHEUS_MULTIPROC_DIR`` set switches
prometheus_client's multiprocess values to the native ones (see
:mod:`gunicorn_prometheus_exporter.native_values`). Imported while Gunicorn
loads its configuration, it also prepares the master's multiprocess
directory (a private one when the variable is unset), so that an app
imported in the master (``--preload``) stores its metrics natively too.

The names of gunicorn-prometheus-exporter 0.2.x stay importable from here:
the worker classes, the ``default_*`` hooks, ``get_config`` and
``load_yaml_config``.
"""

from . import directory as _directory
from ._logging import logger as _logger
from .config import (
    ConfigManager,
    ConfigState,
    ExporterConfig,
    cleanup_config,
    get_config,
    get_config_manager,
    initialize_config,
    load_yaml_config,
)
from .multiprocess import MultiProcessCollector, mark_process_dead, render_directory
from .native_values import (
    disable_native_values,
    enable_from_environment,
    enable_native_values,
    native_values_enabled,
)

__all__ = [
    "ConfigManager",
    "ConfigState",
    "ExporterConfig",
    "MultiProcessCollector",
    "PrometheusEventletWorker",
    "PrometheusGeventWorker",
    "PrometheusThreadWorker",
    "PrometheusWorker",
    "cleanup_config",
    "disable_native_values",
    "enable_native_values",
    "get_config",
    "get_config_manager",
    "initialize_config",
    "load_yaml_config",
    "mark_process_dead",
    "native_values_enabled",
    "render_directory",
]

enable_from_environment()
if _directory.loading_gunicorn_config():
    try:
        _directory.prepare_master()
    except ValueError as _e:  # an invalid setting: on_starting stops Gunicorn with it, named
        _logger.debug("multiprocess directory not prepared at import: %s", _e)

_LEGACY_HOOKS = (
    "default_on_starting",
    "default_when_ready",
    "redis_when_ready",
    "redis_sidecar_when_ready",
    "default_post_fork",
    "default_worker_int",
    "default_on_exit",
)


def __getattr__(name: str) -> object:
    # The worker classes import Gunicorn (and gevent/eventlet), the hooks the
    # agent's supervision: only on use.
    if name.startswith("Prometheus") and name.endswith("Worker"):
        from . import workers

        return getattr(workers, name)
    if name in _LEGACY_HOOKS:
        from . import legacy

        return getattr(legacy, name)
    if name == "PrometheusMaster":
        from .workers import PrometheusMaster

        return PrometheusMaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
