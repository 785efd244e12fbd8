"""Reading a multiprocess directory: a drop-in MultiProcessCollector, a fast
renderer and mark_process_dead, all computed by the C++ core."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import _native
from ._logging import log_warnings

_Families = list[tuple[str, str, str, list[tuple[str, list[tuple[str, str]], float]]]]


def environment_directory() -> str | None:
    """The directory the environment names: PROMETHEUS_MULTIPROC_DIR, or the
    lower-case name prometheus_client still reads (deprecated)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112


def _directory(path: str | None) -> str:
    if path is None:
        path = environment_directory()
    if not path or not os.path.isdir(path):
        raise ValueError("env PROMETHEUS_MULTIPROC_DIR is not set or not a directory")
    return path


def _to_metrics(families: _Families) -> list[Metric]:
    metrics = []
    for name, documentation, typ, samples in families:
        metric = Metric(name, documentation, typ)
        metric.samples = [Sample(s_name, dict(labels), value) for s_name, labels, value in samples]
        metrics.append(metric)
    return metrics


class MultiProcessCollector:
    """Drop-in for ``prometheus_client.multiprocess.MultiProcessCollector``.

    Merges the directory in C++; ``collect()`` returns the same metrics, in the
    same order, as prometheus_client's collector.
    """

    def __init__(self, registry: Any, path: str | None = None) -> None:
        if path is None:
            _native.copy_deprecated_directory_variable()  # where prometheus_client does it
        self._path = _directory(path)
        self._reader = _native.MultiprocessReader()
        if registry:
            registry.register(self)

    @staticmethod
    def merge(files: Sequence[str], accumulate: bool = True) -> list[Metric]:
        """Merge the given files (prometheus_client's ``merge``)."""
        families, warnings = _native.MultiprocessReader().merge_files(list(files), accumulate)
        log_warnings(warnings)
        return _to_metrics(families)

    def collect(self) -> Iterable[Metric]:
        families, warnings = self._reader.collect_directory(self._path, True)
        log_warnings(warnings)
        return _to_metrics(families)

    def render(self, openmetrics: bool = False) -> bytes:
        """The exposition of the directory, rendered without Python objects."""
        body, warnings = self._reader.render_directory(self._path, openmetrics)
        log_warnings(warnings)
        return body


# One reader per directory keeps parsed series keys between scrapes.
_readers: dict[str, Any] = {}


def render_directory(path: str | None = None, openmetrics: bool = False) -> bytes:
    """Render a multiprocess directory: text format 0.0.4, or OpenMetrics 1.0.

    Byte-identical to ``generate_latest`` over a registry holding
    prometheus_client's ``MultiProcessCollector`` for the same directory.
    """
    directory = _directory(path)
    reader = _readers.get(directory)
    if reader is None:
        reader = _readers.setdefault(directory, _native.MultiprocessReader())
    body, warnings = reader.render_directory(directory, openmetrics)
    log_warnings(warnings)
    return body


def mark_process_dead(pid: int | str, path: str | None = None) -> None:
    """Bookkeeping for a dead process.

    Removes its live-mode gauges (as prometheus_client does) and folds its
    counters, histograms, summaries and min/max/sum/mostrecent gauges into the
    directory's archive files, then deletes its files: totals never go
    backwards and the directory does not grow with every dead worker. Call it
    only for processes that have exited.
    """
    directory = _directory(path)
    _removed, _folded, warnings = _native.mark_process_dead(directory, str(pid))
    log_warnings(warnings)
