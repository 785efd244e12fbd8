"""Prometheus exporter for Gunicorn with a native (C++) multiprocess core.

Importing this package with ``PROMETHEUS_MULTIPROC_DIR`` set switches
prometheus_client's multiprocess values to the native ones (see
:mod:`gunicorn_prometheus_exporter.native_values`).
"""

from .config import load_yaml_config
from .multiprocess import MultiProcessCollector, mark_process_dead, render_directory
from .native_values import (
    disable_native_values,
    enable_from_environment,
    enable_native_values,
    native_values_enabled,
)

__all__ = [
    "MultiProcessCollector",
    "PrometheusEventletWorker",
    "PrometheusGeventWorker",
    "PrometheusThreadWorker",
    "PrometheusWorker",
    "load_yaml_config",
    "disable_native_values",
    "enable_native_values",
    "mark_process_dead",
    "native_values_enabled",
    "render_directory",
]

enable_from_environment()


def __getattr__(name: str) -> object:
    # The worker classes import Gunicorn (and gevent/eventlet): only on use.
    if name.startswith("Prometheus") and name.endswith("Worker"):
        from . import workers

        return getattr(workers, name)
    raise AttributeError(name)
