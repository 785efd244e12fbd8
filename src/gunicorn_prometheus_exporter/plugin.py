"""0.2.x's module of the worker classes (``gunicorn_prometheus_exporter.plugin.PrometheusWorker``
and the ``get_prometheus_*_worker`` functions); they live in :mod:`.workers`."""

from __future__ import annotations

from typing import Any


def get_prometheus_eventlet_worker() -> type | None:
    """PrometheusEventletWorker, or None where eventlet or Gunicorn's eventlet worker is missing."""
    return _optional("PrometheusEventletWorker")


def get_prometheus_gevent_worker() -> type | None:
    """PrometheusGeventWorker, or None where gevent is missing."""
    return _optional("PrometheusGeventWorker")


def _optional(name: str) -> type | None:
    try:
        return __getattr__(name)
    except ImportError:
        return None


def __getattr__(name: str) -> Any:
    from . import workers

    return getattr(workers, name)
