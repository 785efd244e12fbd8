"""The current trace as an exemplar, when OpenTelemetry is there.

``current_exemplar()`` gives the labels of an exemplar for the span active in
the calling context: ``{"trace_id": <32 hex>, "span_id": <16 hex>}``, or
``None`` when OpenTelemetry's API (``pip install
gunicorn-prometheus-exporter[tracing]``) is not installed or no valid span is
active. It is what the request duration histogram takes as its exemplar, and
what an app can pass to ``Counter.inc(exemplar=...)`` or
``Histogram.observe(exemplar=...)``.
"""

from __future__ import annotations

from typing import Any

from . import _native

_get_current_span: Any
try:  # optional: the API alone, no SDK needed to read the context
    from opentelemetry.trace import get_current_span as _get_current_span
except ImportError:  # pragma: no cover - exercised without the extra installed
    _get_current_span = None


def current_exemplar() -> dict[str, str] | None:
    """Exemplar labels of the active span, or None (no OpenTelemetry, no valid span)."""
    if _get_current_span is None:
        return None
    context = _get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _span_storage() -> tuple[Any, str] | tuple[None, None]:
    """The context variable and key under which OpenTelemetry's default
    runtime context keeps the active span; (None, None) for another one."""
    try:
        from opentelemetry import context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:
        return None, None
    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext or not isinstance(_SPAN_KEY, str):
        return None, None
    return runtime._current_context, _SPAN_KEY


def native_trace() -> Any:
    """``current_exemplar`` for the native request path: where OpenTelemetry
    keeps its context in a context variable (its default), "no span
    active" is answered by one lookup of it instead of a walk through the
    API (1.5 us a request); anything else by ``current_exemplar``."""
    if _get_current_span is None:
        return _native.CurrentTrace(None, None, None)
    return _native.CurrentTrace(current_exemplar, *_span_storage())
