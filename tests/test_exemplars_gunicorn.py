"""End to end: exemplars from real Gunicorn workers through the agent.

An app traced with OpenTelemetry's SDK (a real TracerProvider, no exporter)
counts its requests with the trace id as exemplar. The agent's OpenMetrics
answer (``Accept: application/openmetrics-text``) carries the most recent
exemplar across the workers, with the trace id the app saw; the text format
has none and stays parseable by Prometheus' rules (prometheus_client's
parser); the request duration histogram carries the trace of the request.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gunicorn_runner import Gunicorn, wait_for

pytest.importorskip("opentelemetry.sdk.trace")

APP = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import Counter

    from gunicorn_prometheus_exporter.tracing import current_exemplar

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("exemplar-test")
    handled = Counter("app_handled", "Requests the app handled", ["path"])

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/untraced":
            handled.labels(path).inc(exemplar=current_exemplar())  # None: no span
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"none"]
        with tracer.start_as_current_span("handle"):
            exemplar = current_exemplar()
            handled.labels(path).inc(exemplar=exemplar)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [exemplar["trace_id"].encode()]
    """
)

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def exemplar_of(body: str, sample: str) -> tuple[str, str] | None:
    """(trace_id, span_id) on the line of `sample`, if it has an exemplar."""
    for line in body.splitlines():
        if line.startswith(sample + " ") and " # " in line:
            match = re.search(r'# \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\}', line)
            assert match, line
            return match.group(2), match.group(1)
    return None


@pytest.fixture
def traced(tmp_path: Path) -> Gunicorn:
    (tmp_path / "traced_app.py").write_text(APP)
    g = Gunicorn(tmp_path, workers=3, app="traced_app:app", chdir=tmp_path)
    yield g
    g.stop()


def test_agent_serves_the_latest_trace_across_workers(traced: Gunicorn) -> None:
    trace_ids = []
    for _ in range(30):  # over all three workers (sync workers take turns)
        status, _, body = traced.get("/traced")
        assert status == 200
        trace_ids.append(body.decode())
    assert len(set(trace_ids)) == 30 and all(re.fullmatch("[0-9a-f]{32}", t) for t in trace_ids)

    def latest() -> tuple[str, str] | None:
        body = traced.scrape(headers=OPENMETRICS)
        found = exemplar_of(body, 'app_handled_total{path="/traced"}')
        return found if found and found[0] == trace_ids[-1] else None

    trace_id, span_id = wait_for(latest, message="the last request's trace id on /metrics")
    assert trace_id == trace_ids[-1] and re.fullmatch("[0-9a-f]{16}", span_id)

    body = traced.scrape(headers=OPENMETRICS)
    assert 'app_handled_total{path="/traced"} 30.0 # {span_id="' in body
    assert body.endswith("# EOF\n")
    # The text format is as before: no exemplars, and it parses.
    text = traced.scrape()
    assert " # {" not in text and "# EOF" not in text
    assert sum(v for n, ls, v in traced.samples() if n == "app_handled_total") == 30


def test_no_span_no_exemplar(traced: Gunicorn) -> None:
    for _ in range(5):
        assert traced.status("/untraced") == 200
    body = wait_for(
        lambda: (b := traced.scrape(headers=OPENMETRICS)) and 'path="/untraced"} 5.0' in b and b,
        message="the untraced requests on /metrics",
    )
    assert exemplar_of(body, 'app_handled_total{path="/untraced"}') is None


def test_request_duration_carries_the_request_trace(traced: Gunicorn) -> None:
    status, _, body = traced.get("/traced")
    assert status == 200
    trace_id = body.decode()

    def bucket_with_trace() -> bool:
        scraped = traced.scrape(headers=OPENMETRICS)
        return any(
            line.startswith("gunicorn_worker_request_duration_seconds_bucket")
            and f'trace_id="{trace_id}"' in line
            for line in scraped.splitlines()
        )

    wait_for(bucket_with_trace, message="the request's trace id on its duration bucket")


ASGI_APP = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from gunicorn_prometheus_exporter.tracing import current_exemplar

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("exemplar-test")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        with tracer.start_as_current_span("handle"):
            trace_id = current_exemplar()["trace_id"]
            start = {"type": "http.response.start", "status": 200, "headers": []}
            await send(start)
            await send({"type": "http.response.body", "body": trace_id.encode()})
    """
)


def test_uvicorn_request_duration_carries_the_request_trace(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn_worker")
    (tmp_path / "traced_asgi.py").write_text(ASGI_APP)
    with Gunicorn(
        tmp_path,
        workers=2,
        worker_class="uvicorn_worker.UvicornWorker",
        app="traced_asgi:app",
        chdir=tmp_path,
    ) as g:
        status, _, body = g.get("/")
        assert status == 200
        trace_id = body.decode()
        assert re.fullmatch("[0-9a-f]{32}", trace_id)

        def bucket_with_trace() -> bool:
            return any(
                line.startswith("gunicorn_worker_request_duration_seconds_bucket")
                and f'trace_id="{trace_id}"' in line
                for line in g.scrape(headers=OPENMETRICS).splitlines()
            )

        wait_for(bucket_with_trace, message="the ASGI request's trace id on its duration bucket")
