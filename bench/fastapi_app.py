"""FastAPI hello world for bench/bench_gunicorn.py's UvicornWorker rows.

gunicorn -k uvicorn_worker.UvicornWorker --chdir bench fastapi_app:app                   # no metrics
gunicorn -k uvicorn_worker.UvicornWorker --chdir bench "fastapi_app:instrumented_app()"  # instrumentator
"""

from __future__ import annotations

from fastapi import FastAPI


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Hello World"}

    return app


app = make_app()


def instrumented_app() -> FastAPI:
    """The same app with prometheus-fastapi-instrumentator's defaults and its
    own /metrics, as its README shows (multiprocess through
    PROMETHEUS_MULTIPROC_DIR, which the benchmark sets)."""
    from prometheus_fastapi_instrumentator import Instrumentator

    instrumented = make_app()
    Instrumentator().instrument(instrumented).expose(instrumented)
    return instrumented
