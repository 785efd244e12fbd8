"""0.2.x configurations run unchanged: each configuration example of
gunicorn-prometheus-exporter 0.2.4's README (and the documented string form
of its hooks) is a Gunicorn config file here, started with real Gunicorn
without our own config module, and must give exact request counts on the
agent's /metrics. Plus the 0.2.x Python names: hooks, config, worker classes,
YAML schema, RedisValue's positional signature."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest

from gunicorn_runner import Agent, Gunicorn, labelled, pids_of, value

# (path, expected status, how many) against demo/app.py
PLAN = [("/", 200, 6), ("/missing", 404, 3), ("/fail", 503, 2), ("/boom", 500, 2)]
TOTAL = sum(n for _, _, n in PLAN)
EXPECTED = {
    "requests": {("GET", "2xx"): 6, ("GET", "4xx"): 3, ("GET", "5xx"): 4},
    "failed": {"GET": 4},
    "errors": {"500": 2},
    "durations": float(TOTAL),
}

YAML = """\
exporter:
  prometheus:
    metrics_port: 9091
    bind_address: "0.0.0.0"
    multiproc_dir: "{multiproc_dir}"
  gunicorn:
    workers: 2
    timeout: 30
    keepalive: 2
  redis:
    enabled: false
  ssl:
    enabled: false
  cleanup:
    db_files: true
"""

# 0.2.4 README, "Option A: YAML Configuration (Recommended)"
OPTION_A = """\
from gunicorn_prometheus_exporter import load_yaml_config

# Load YAML configuration
load_yaml_config("{yaml}")

# Import hooks after loading YAML config
from gunicorn_prometheus_exporter.hooks import (
    default_when_ready,
    default_on_starting,
    default_worker_int,
    default_on_exit,
    default_post_fork,
)

# Gunicorn settings
bind = "0.0.0.0:8000"
workers = 2
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"

# Use pre-built hooks
when_ready = default_when_ready
on_starting = default_on_starting
worker_int = default_worker_int
on_exit = default_on_exit
post_fork = default_post_fork
"""

# "Option B: Environment Variables"
OPTION_B = """\
# Basic configuration
bind = "0.0.0.0:8000"

# Worker configuration based on workload type
# For I/O-bound applications (typical web apps):
workers = 9  # 2 x CPU cores + 1 (classic Gunicorn formula)

# Prometheus exporter worker classes
# Sync workers (blocking I/O) - good for most web applications
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"

# Optional: Custom hooks for advanced setup
def when_ready(server):
    from gunicorn_prometheus_exporter.hooks import default_when_ready
    default_when_ready(server)
"""

# "High-Traffic Web Application (I/O-bound)"
HIGH_TRAFFIC = """\
bind = "0.0.0.0:8000"
workers = 9  # 2x4 cores + 1 = 9 workers
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
worker_connections = 1000
max_requests = 1000
max_requests_jitter = 100
timeout = 30
keepalive = 2

# Prometheus metrics
def when_ready(server):
    from gunicorn_prometheus_exporter.hooks import default_when_ready
    default_when_ready(server)
"""

# "CPU-Intensive Application"
CPU_INTENSIVE = """\
bind = "0.0.0.0:8000"
workers = 4  # 1x4 cores = 4 workers
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
max_requests = 500
timeout = 120

# Prometheus metrics
def when_ready(server):
    from gunicorn_prometheus_exporter.hooks import default_when_ready
    default_when_ready(server)
"""

# "High-Concurrency API (Async)": eventlet, which Gunicorn ships up to 23
HIGH_CONCURRENCY = """\
bind = "0.0.0.0:8000"
workers = 4  # Fewer workers for async
worker_class = "gunicorn_prometheus_exporter.PrometheusEventletWorker"
worker_connections = 2000  # More connections per worker
max_requests = 2000
timeout = 60

# Prometheus metrics
def when_ready(server):
    from gunicorn_prometheus_exporter.hooks import default_when_ready
    default_when_ready(server)
"""

# 0.2.x docs (FastAPI/Django guides): hooks named as strings, preload_app
STRING_HOOKS = """\
bind = "0.0.0.0:8000"
workers = 4
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
master_class = "gunicorn_prometheus_exporter.PrometheusMaster"
when_ready = "gunicorn_prometheus_exporter.default_when_ready"
on_starting = "gunicorn_prometheus_exporter.default_on_starting"
worker_int = "gunicorn_prometheus_exporter.default_worker_int"
on_exit = "gunicorn_prometheus_exporter.default_on_exit"
preload_app = True
"""

# README "Gunicorn Hooks", with Redis storage
REDIS_HOOK = """\
bind = "0.0.0.0:8000"
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"

from gunicorn_prometheus_exporter.hooks import redis_when_ready

def when_ready(server):
    redis_when_ready(server)
"""


def nonzero(samples: list, name: str, *keys: str) -> dict:
    out = {}
    for labels, v in labelled(samples, name).items():
        if v:
            ls = dict(labels)
            key = tuple(ls[k] for k in keys)
            out[key if len(key) > 1 else key[0]] = v
    return out


def counts(samples: list) -> dict:
    return {
        "requests": nonzero(samples, "gunicorn_worker_requests_total", "method", "status"),
        "failed": nonzero(samples, "gunicorn_worker_failed_requests_total", "method"),
        "errors": nonzero(samples, "gunicorn_worker_error_handling_total", "status"),
        "durations": value(samples, "gunicorn_worker_request_duration_seconds_count"),
    }


def send_plan(g: Gunicorn) -> None:
    for path, status, n in PLAN:
        for _ in range(n):
            assert g.status(path) == status, path


def check_exact(g: Gunicorn) -> list:
    send_plan(g)
    samples = g.wait_metrics(
        lambda s: (
            value(s, "gunicorn_worker_requests_total") >= TOTAL
            and value(s, "gunicorn_worker_request_duration_seconds_count") >= TOTAL
        ),
        what=f"{TOTAL} requests",
    )
    assert counts(samples) == EXPECTED, g.log()[-3000:]
    assert pids_of(samples, "gunicorn_worker_memory_bytes") >= set(g.worker_pids())
    assert value(samples, "gunicorn_master_workers") == g.workers
    return samples


def write_config(tmp_path: Path, text: str, **fields: str) -> str:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(textwrap.dedent(text).format(**fields) if fields else text)
    return str(path)


EXAMPLES = [
    pytest.param(OPTION_B, id="option-B-environment"),
    pytest.param(HIGH_TRAFFIC, id="high-traffic"),
    pytest.param(CPU_INTENSIVE, id="cpu-intensive"),
    pytest.param(STRING_HOOKS, id="docs-string-hooks-preload"),
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_readme_example_counts_exactly(tmp_path: Path, example: str) -> None:
    config = write_config(tmp_path, example)
    with Gunicorn(tmp_path, worker_class=None, config=config) as g:
        check_exact(g)


def test_option_a_yaml_and_hooks(tmp_path: Path) -> None:
    multiproc_dir = tmp_path / "prometheus_multiproc"
    yaml_path = tmp_path / "gunicorn-prometheus-exporter.yml"
    yaml_path.write_text(YAML.format(multiproc_dir=multiproc_dir))
    config = write_config(tmp_path, OPTION_A.replace("{yaml}", str(yaml_path)))
    with Gunicorn(tmp_path, worker_class=None, config=config) as g:
        check_exact(g)
        # the YAML file's directory is the one in use (not a private one)
        assert any(name.startswith("counter_") for name in os.listdir(multiproc_dir))
        log = g.log()  # the only tracebacks are the app's own /boom
        assert (
            log.count("Traceback") == log.count("RuntimeError: the demo app fails on purpose") == 2
        )
    # the yaml directory is the user's: kept
    assert multiproc_dir.is_dir()


def test_string_hooks_with_preload_keep_app_metrics(tmp_path: Path) -> None:
    """The 0.2.x docs' FastAPI/Django guides: hooks as strings, preload_app."""
    (tmp_path / "app_with_metrics.py").write_text(
        textwrap.dedent("""
        from prometheus_client import Counter
        served = Counter("app_served", "requests the app served")
        served.inc(3)  # at import, in the master

        def app(environ, start_response):
            served.inc()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
    """)
    )
    config = write_config(tmp_path, STRING_HOOKS)
    with Gunicorn(
        tmp_path, worker_class=None, config=config, app="app_with_metrics:app", chdir=tmp_path
    ) as g:
        for _ in range(5):
            assert g.status("/") == 200
        samples = g.wait_metrics(
            lambda s: value(s, "app_served_total") >= 8, what="the app's counter"
        )
        assert value(samples, "app_served_total") == 8
        assert value(samples, "gunicorn_worker_requests_total") == 5


def test_redis_when_ready_mirrors_to_redis(tmp_path: Path) -> None:
    from redis_server import RedisServer

    with RedisServer() as redis:
        config = write_config(tmp_path, REDIS_HOOK)
        env = {**redis.env(), "REDIS_INSTANCE_ID": "legacy", "REDIS_FLUSH_INTERVAL": "0.2"}
        with Gunicorn(tmp_path, worker_class=None, config=config, env=env) as g:
            check_exact(g)
            # what the instance mirrored, read back by a sidecar from Redis alone
            with Agent(tmp_path, ["--source", "redis"], env=redis.env()) as sidecar:
                samples = sidecar.wait_metrics(
                    lambda s: value(s, "gunicorn_worker_requests_total") >= TOTAL,
                    what="the mirror in Redis",
                )
                assert counts(samples) == EXPECTED


SIDECAR_HOOK = """\
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
from gunicorn_prometheus_exporter.hooks import redis_sidecar_when_ready
when_ready = redis_sidecar_when_ready
"""


def test_redis_sidecar_when_ready_mirrors_without_serving(tmp_path: Path) -> None:
    """0.2.x's sidecar hook: the app's container serves no metrics (the
    sidecar does, from Redis), yet every request reaches Redis."""
    from redis_server import RedisServer

    with RedisServer() as redis:
        config = write_config(tmp_path, SIDECAR_HOOK)
        env = {**redis.env(), "REDIS_INSTANCE_ID": "app", "REDIS_FLUSH_INTERVAL": "0.2"}
        with Gunicorn(tmp_path, worker_class=None, config=config, env=env, wait_ready=False) as g:
            g.wait_serving()
            send_plan(g)
            with Agent(tmp_path, ["--source", "redis"], env=redis.env()) as sidecar:
                samples = sidecar.wait_metrics(
                    lambda s: value(s, "gunicorn_worker_requests_total") >= TOTAL,
                    what="the mirror in Redis",
                )
                assert counts(samples) == EXPECTED
            with pytest.raises(OSError):
                g.scrape(timeout=1)  # nothing listens on the app's metrics port
            assert len(g.agent_pids()) == 1


def test_eventlet_example_on_gunicorn_23(environments, tmp_path: Path) -> None:
    """Gunicorn ships the eventlet worker up to 23: the example runs there."""
    from venvs import VenvGunicorn

    python = environments.python("23.0.0", "eventlet")
    config = write_config(tmp_path, HIGH_CONCURRENCY)
    with VenvGunicorn(tmp_path, python, None, config=config) as g:
        assert "Starting gunicorn 23.0.0" in g.log()
        check_exact(g)


# ------------------------------------------------------------ Python API ----


def test_the_0_2_x_names_import() -> None:
    from gunicorn.workers.sync import SyncWorker

    from gunicorn_prometheus_exporter import (  # noqa: F401
        ConfigManager,
        ConfigState,
        ExporterConfig,
        PrometheusMaster,
        PrometheusThreadWorker,
        PrometheusWorker,
        cleanup_config,
        get_config,
        get_config_manager,
        initialize_config,
        load_yaml_config,
    )
    from gunicorn_prometheus_exporter.backend import (  # noqa: F401
        RedisMultiProcessCollector,
        RedisStorageManager,
        get_redis_storage_manager,
        is_redis_enabled,
        setup_redis_metrics,
        teardown_redis_metrics,
    )
    from gunicorn_prometheus_exporter.hooks import (  # noqa: F401
        default_on_exit,
        default_on_starting,
        default_post_fork,
        default_when_ready,
        default_worker_int,
        redis_when_ready,
    )
    from gunicorn_prometheus_exporter.hooks import load_yaml_config as hooks_load_yaml_config  # noqa: F401
    from gunicorn_prometheus_exporter.plugin import PrometheusWorker as PluginWorker
    from gunicorn_prometheus_exporter.plugin import get_prometheus_gevent_worker

    assert PluginWorker is PrometheusWorker
    assert issubclass(PrometheusWorker, SyncWorker)
    if importlib.util.find_spec("gevent") is not None:
        assert get_prometheus_gevent_worker().__name__ == "PrometheusGeventWorker"


def test_get_config_lifecycle(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn_prometheus_exporter import config as config_module

    config_module.cleanup_config()
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "9200")
    cfg = config_module.get_config()  # initialized on first use
    assert cfg.prometheus_metrics_port == 9200
    assert config_module.get_config_manager().state is config_module.ConfigState.INITIALIZED
    with pytest.raises(RuntimeError, match="already"):
        config_module.initialize_config()
    config_module.cleanup_config()
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "not-a-port")
    with pytest.raises(ValueError, match="PROMETHEUS_METRICS_PORT"):
        config_module.initialize_config()
    assert config_module.get_config_manager().state is config_module.ConfigState.ERROR
    config_module.cleanup_config()


def test_yaml_sections_apply_only_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in 0.2.x: ``ssl`` and ``redis`` settings count only with ``enabled: true``;
    the environment wins over the file."""
    from gunicorn_prometheus_exporter.config import load_yaml_config

    for name in (
        "PROMETHEUS_SSL_CERTFILE",
        "REDIS_ENABLED",
        "REDIS_HOST",
        "REDIS_PORT",
        "GUNICORN_WORKERS",
        "PROMETHEUS_METRICS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "c.yml"
    path.write_text(
        textwrap.dedent("""\
        exporter:
          prometheus:
            metrics_port: 9300
            bind_address: 127.0.0.1
            ssl: {enabled: false, certfile: /nonexistent.pem}
          gunicorn: {workers: 3}
          redis: {enabled: false, host: redis.example, port: 6390}
    """)
    )
    load_yaml_config(str(path))
    assert os.environ["PROMETHEUS_METRICS_PORT"] == "9300"
    assert os.environ["GUNICORN_WORKERS"] == "3"
    assert "PROMETHEUS_SSL_CERTFILE" not in os.environ and "REDIS_HOST" not in os.environ
    path.write_text("exporter:\n  redis: {enabled: true, host: 127.0.0.2, port: 6390}\n")
    monkeypatch.setenv("REDIS_PORT", "6391")
    load_yaml_config(str(path))
    assert (os.environ["REDIS_ENABLED"], os.environ["REDIS_HOST"], os.environ["REDIS_PORT"]) == (
        "true",
        "127.0.0.2",
        "6391",
    )
    path.write_text("exporter:\n  redis: {enabled: true, hots: x}\n")
    with pytest.raises(ValueError, match=r"exporter\.redis\.hots"):
        load_yaml_config(str(path))


def test_redis_value_takes_the_seed_positional_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gunicorn_prometheus_exporter import (
        disable_native_values,
        enable_native_values,
        render_directory,
    )
    from gunicorn_prometheus_exporter.backend.core import RedisValue

    enable_native_values(str(tmp_path))
    try:
        v = RedisValue("gauge", "g", "g", [], [], "help", "livesum", None, "prefix")
        v.set(3.0)
        assert v.get() == 3.0
        assert b"\ng 3.0\n" in render_directory(str(tmp_path))
    finally:
        disable_native_values()
