"""Worker classes with the names of gunicorn-prometheus-exporter 0.2.x, for
configurations that name them (``worker_class =
"gunicorn_prometheus_exporter.PrometheusWorker"``). With our Gunicorn config
they are Gunicorn's own workers; without it they install the worker-side
instrumentation themselves (PROMETHEUS_MULTIPROC_DIR must then be set)."""

from __future__ import annotations

import importlib
from typing import Any

_BASES = {
    "PrometheusWorker": ("gunicorn.workers.sync", "SyncWorker"),
    "PrometheusThreadWorker": ("gunicorn.workers.gthread", "ThreadWorker"),
    "PrometheusGeventWorker": ("gunicorn.workers.ggevent", "GeventWorker"),
    "PrometheusEventletWorker": ("gunicorn.workers.geventlet", "EventletWorker"),
}
_classes: dict[str, type] = {}


def _make(name: str) -> type:
    module, base_name = _BASES[name]
    try:
        base = getattr(importlib.import_module(module), base_name)
    except ImportError as e:
        raise ImportError(
            f"{name} needs {module}.{base_name}, which this Gunicorn does not have: {e}"
        ) from None

    def init_process(self: Any) -> None:
        from .worker_hooks import instrument_worker

        instrument_worker(self)
        base.init_process(self)

    return type(name, (base,), {"init_process": init_process, "__module__": __name__})


def _make_master() -> type:
    from gunicorn.arbiter import Arbiter

    def setup(self: Any, app: Any) -> None:
        from .master_hooks import install_missing_hooks

        Arbiter.setup(self, app)
        install_missing_hooks(self)  # our hooks count signals and restarts

    return type(
        "PrometheusMaster",
        (Arbiter,),
        {
            "setup": setup,
            "__module__": __name__,
            "__doc__": "0.2.x's Arbiter subclass: Gunicorn's with our hooks.",
        },
    )


def __getattr__(name: str) -> type:
    if name == "PrometheusMaster":
        if name not in _classes:
            _classes[name] = _make_master()
        return _classes[name]
    if name not in _BASES:
        raise AttributeError(name)
    if name not in _classes:
        _classes[name] = _make(name)
    return _classes[name]
