"""Native values for prometheus_client's multiprocess mode.

prometheus_client looks up ``prometheus_client.values.ValueClass`` each time a
metric (or a labelled child) is created. Pointing it at ``NativeValue`` stores
every Counter, Gauge, Histogram and Summary created afterwards in this
process's memory-mapped files, in prometheus_client's own format, through the
C++ core. Create metrics after enabling: values created before keep the class
they were created with.

``MultiProcessValue(process_identifier)`` is prometheus_client's function of
that name with native values: files are named ``{prefix}_{identifier()}.db``,
the identifier is consulted on every ``inc``/``set``/``get``, and when it
changes every value of the class moves to the new identifier's files. With the
default, ``os.getpid``, the class is ``NativeValue`` itself, which follows fork
in C++; another identifier gives a subclass, whose values therefore take
prometheus_client's own metric methods (the fast paths accept exactly
``NativeValue``). While enabled, ``prometheus_client.values.MultiProcessValue``
is this function.

While enabled, the update methods of prometheus_client's metric classes get a
native fast path (one C call per ``inc``/``set``/``observe``) for metrics with
native values; every other case runs prometheus_client's own method.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from prometheus_client import metrics as _client_metrics
from prometheus_client import mmap_dict as _client_mmap_dict
from prometheus_client import values as _client_values

from . import _native
from ._logging import logger
from .multiprocess import environment_directory

NativeValue = _native.NativeValue

# The value class that was active before enabling, restored by disabling.
_previous_value_class: type | None = None
# prometheus_client's MultiProcessValue, restored by disabling.
_client_multi_process_value = _client_values.MultiProcessValue

_native.set_warning_handler(lambda message: logger.warning("%s", message))

# prometheus_client up to 0.17 stores no timestamp in its files: ours and
# theirs must have one layout.
VALUE_ONLY_FILES = not hasattr(_client_mmap_dict, "_pack_two_doubles")
_native.set_value_only_layout(VALUE_ONLY_FILES)

# (class, method name, native fast path) patched while native values are on.
_FAST_METHODS = (
    (_client_metrics.Counter, "inc", "counter.inc"),
    (_client_metrics.Gauge, "inc", "gauge.inc"),
    (_client_metrics.Gauge, "dec", "gauge.dec"),
    (_client_metrics.Gauge, "set", "gauge.set"),
    (_client_metrics.Histogram, "observe", "histogram.observe"),
    (_client_metrics.Summary, "observe", "summary.observe"),
)
_original_methods: dict[tuple[type, str], object] = {}


def _install_fast_methods() -> None:
    for cls, name, kind in _FAST_METHODS:
        if (cls, name) not in _original_methods:
            original = cls.__dict__[name]
            _original_methods[(cls, name)] = original
            setattr(cls, name, _native.fast_method(kind, original))


def _remove_fast_methods() -> None:
    for (cls, name), original in _original_methods.items():
        setattr(cls, name, original)
    _original_methods.clear()


def _register_cleanup(cleanup: Callable[[], None]) -> None:
    # prometheus_client's close_all_multiprocess_files() runs these (and
    # forgets them, as it forgets its own); releases before 0.20 have neither.
    cleanups = getattr(_client_values, "_multi_process_cleanups", None)
    if cleanups is not None and cleanup not in cleanups:
        cleanups.append(cleanup)


def _close_pid_files() -> None:
    NativeValue.close_all_files()


def MultiProcessValue(process_identifier: Callable[[], object] = os.getpid) -> type:  # noqa: N802
    """``prometheus_client.values.MultiProcessValue`` with native values.

    ``process_identifier`` must return distinct values in processes that run
    at the same time (prometheus_client's rule). ``os.getpid`` gives
    ``NativeValue``; any other function a subclass of it that consults the
    function on every update, as prometheus_client's class does.
    """
    if process_identifier is os.getpid:
        _register_cleanup(_close_pid_files)
        return NativeValue
    return _identified_value_class(process_identifier)


def _identified_value_class(process_identifier: Callable[[], object]) -> type:
    # Called once now and on every update; names formatted as prometheus_client's.
    current = process_identifier()
    identity = _native.ProcessIdentity(f"{current}")
    lock = threading.Lock()

    def check_for_identifier_change() -> None:
        nonlocal current
        with lock:
            actual = process_identifier()
            if actual != current:
                current = actual
                identity.rename(f"{actual}")

    class IdentifiedNativeValue(NativeValue):
        """Native values named by a process identifier function."""

        def __init__(
            self,
            typ: str,
            metric_name: str,
            name: str,
            labelnames: object,
            labelvalues: object,
            help_text: str,
            multiprocess_mode: str = "",
            **kwargs: object,
        ) -> None:
            _native.copy_deprecated_directory_variable()
            check_for_identifier_change()
            super().__init__(
                typ,
                metric_name,
                name,
                labelnames,
                labelvalues,
                help_text,
                multiprocess_mode,
                identity=identity,
                **kwargs,
            )

        def inc(self, amount: float) -> None:
            check_for_identifier_change()
            super().inc(amount)

        def set(self, value: float, timestamp: float | None = None) -> None:
            check_for_identifier_change()
            super().set(value, timestamp)

        def get(self) -> float:
            check_for_identifier_change()
            return super().get()

        @staticmethod
        def close_all_files() -> None:
            identity.close_files()

    _register_cleanup(identity.close_files)
    return IdentifiedNativeValue


def _is_native(value_class: object) -> bool:
    return isinstance(value_class, type) and issubclass(value_class, NativeValue)


def enable_native_values(
    path: str | None = None, process_identifier: Callable[[], object] = os.getpid
) -> None:
    """Store the values of metrics created from now on natively.

    ``path`` is the multiprocess directory; by default it is
    ``PROMETHEUS_MULTIPROC_DIR``, read whenever a file is opened (as
    prometheus_client does). ``process_identifier`` names this process's files
    as in ``prometheus_client.values.MultiProcessValue``. Raises ``ValueError``
    naming the directory when it does not exist.
    """
    global _previous_value_class
    directory = path if path is not None else environment_directory()
    if not directory:
        raise ValueError("PROMETHEUS_MULTIPROC_DIR is not set and no path was given")
    if not os.path.isdir(directory):
        source = "path" if path is not None else "PROMETHEUS_MULTIPROC_DIR"
        raise ValueError(f"{source}={directory!r} is not a directory")
    _native.set_directory(path or "")
    if not _is_native(_client_values.ValueClass):
        _previous_value_class = _client_values.ValueClass
    _client_values.ValueClass = MultiProcessValue(process_identifier)
    _client_values.MultiProcessValue = MultiProcessValue
    _install_fast_methods()


def disable_native_values() -> None:
    """Give metrics created from now on prometheus_client's own values again."""
    global _previous_value_class
    if _is_native(_client_values.ValueClass):
        _client_values.ValueClass = _previous_value_class or _client_values.MutexValue
        _previous_value_class = None
    _client_values.MultiProcessValue = _client_multi_process_value
    _remove_fast_methods()


def native_values_enabled() -> bool:
    """Whether metrics created now get native values."""
    return _is_native(_client_values.ValueClass)


def enable_from_environment() -> None:
    """Enable native values when PROMETHEUS_MULTIPROC_DIR names a directory."""
    directory = environment_directory()
    if not directory:
        return
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            logger.warning(
                "PROMETHEUS_MULTIPROC_DIR=%r cannot be created (%s); native multiprocess "
                "values are off",
                directory,
                e.strerror,
            )
            return
    enable_native_values()


def replace_value_class(value_class: type) -> type:
    """Make metrics created from now on take ``value_class`` (another class
    on top of native values); returns the class it replaces, to give back
    with this function again. The one writer of ``ValueClass`` besides
    enabling and disabling."""
    previous: type = _client_values.ValueClass
    _client_values.ValueClass = value_class
    return previous
