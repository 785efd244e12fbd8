"""pytest plugin that runs prometheus_client's own tests/test_multiprocess.py
on our native values (tests/test_prometheus_client_suite.py loads it with
``-p prometheus_client_suite_plugin``, so it is imported before the test
module takes prometheus_client's names).

GPE_SUITE_MODE=values: our values write, prometheus_client's collector reads.
GPE_SUITE_MODE=both: our MultiProcessCollector and mark_process_dead as well.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from prometheus_client import multiprocess, values

import gunicorn_prometheus_exporter as exporter
from gunicorn_prometheus_exporter import native_values

MODE = os.environ["GPE_SUITE_MODE"]
assert MODE in ("values", "both"), MODE

# Their tests set and unset PROMETHEUS_MULTIPROC_DIR themselves; enabled
# without a path, our files follow the variable, as theirs do.
with tempfile.TemporaryDirectory() as _directory:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _directory
    native_values.enable_native_values()
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
if MODE == "both":
    multiprocess.MultiProcessCollector = exporter.MultiProcessCollector
    multiprocess.mark_process_dead = exporter.mark_process_dead

EXPECTED = {"MultiProcessValue": native_values.MultiProcessValue}
if MODE == "both":
    EXPECTED.update(
        MultiProcessCollector=exporter.MultiProcessCollector,
        mark_process_dead=exporter.mark_process_dead,
    )


def pytest_report_header(config: Any) -> str:
    return f"gunicorn_prometheus_exporter: native values, mode {MODE}"


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    # The names their module imported must be ours, or the run proves nothing.
    for item in items:
        module = item.module
        for name, ours in EXPECTED.items():
            if getattr(module, name, ours) is not ours:
                raise RuntimeError(
                    f"{module.__name__}.{name} is not gunicorn_prometheus_exporter's"
                )
    # get_value_class() looks the name up in prometheus_client.values.
    if values.MultiProcessValue is not native_values.MultiProcessValue:
        raise RuntimeError("prometheus_client.values.MultiProcessValue is not ours")
