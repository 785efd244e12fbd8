"""bench/bench_gunicorn.py's traced rows: demo/app.py's hello world, each
request in an OpenTelemetry span (the SDK's TracerProvider, no exporter), so
that the exporter takes the trace id as the request duration's exemplar.

gunicorn --chdir bench traced_app:app
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))
from app import app as hello

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("bench")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with tracer.start_as_current_span("request"):
        return hello(environ, start_response)
