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


def _tuple_span_context() -> type | None:
    """OpenTelemetry's SpanContext when its properties read the items of the
    tuple it is, (trace_id, span_id, is_remote, trace_flags, trace_state,
    is_valid), as OpenTelemetry 1.x has it: the native reader then takes the
    items instead of calling three properties (tested here, not assumed)."""
    from opentelemetry.trace import SpanContext

    try:
        valid, invalid = SpanContext(0xABC, 0xDEF, False), SpanContext(0, 0, False)
        same = all(
            isinstance(p, tuple)
            and len(p) >= 6
            and (p[0], p[1], p[5]) == (p.trace_id, p.span_id, p.is_valid)
            for p in (valid, invalid)
        )
        return SpanContext if same and valid[5] is True and invalid[5] is False else None
    except Exception:  # noqa: BLE001 - a layout of another kind: read by attributes
        return None


def native_trace() -> Any:
    """The native reader of the active span (request_outcome.cpp): where
    OpenTelemetry keeps its context in a context variable (its default),
    the span is one lookup of it away instead of a walk through the API
    (1.5 us a request); elsewhere its get_current_span() answers."""
    try:  # optional: the API alone, no SDK needed to read the context
        from opentelemetry.trace import Span, get_current_span
    except ImportError:
        return _native.CurrentTrace(None, None, None, None)
    context_var, span_key = _span_storage()
    return _native.CurrentTrace(
        get_current_span, Span, context_var, span_key, _tuple_span_context()
    )


# This process's reader, shared by every wrapper and current_exemplar().
TRACE = native_trace()


def current_exemplar() -> dict[str, str] | None:
    """Exemplar labels of the active span, or None (no OpenTelemetry, no valid span)."""
    labels: dict[str, str] | None = TRACE.exemplar()
    return labels
