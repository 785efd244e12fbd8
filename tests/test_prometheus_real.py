"""The deployment kit against the real thing: Debian's `prometheus` scrapes
a real Gunicorn + agent every second with the kit's scrape configuration
(deploy/prometheus/scrape-direct.yml, its targets pointed at the agent and at
a port where nothing listens) and evaluates the kit's rules, while the test
drives load: ordinary, failing and slow requests, every worker held busy
while connections pile up unaccepted, a worker killed (SIGKILL) and one
aborted as Gunicorn aborts a worker past its timeout (SIGABRT). Then every
dashboard panel's query and every rule's expression go through Prometheus'
HTTP API and each returns data of the shape the load makes: non-empty where
the load makes it so, including each alert's condition. Counters never
reset across the worker kill, and `promtool check metrics` accepts both
the text and the OpenMetrics output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gunicorn_runner import Gunicorn, free_port, http_get, wait_for
from prometheus_server import Prometheus, needs_prometheus

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = [needs_prometheus, pytest.mark.interpreter_independent]

APP = """
import os, time

GATE = os.environ["TEST_GATE"]


def app(environ, start_response):
    path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    status = "200 OK"
    if path == "/hold":
        open(os.path.join(GATE, query + ".started"), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(GATE, query + ".release")) and time.monotonic() < deadline:
            time.sleep(0.01)
    elif path == "/slow":
        time.sleep(float(query))
    elif path == "/burn":
        end = time.process_time() + float(query)
        while time.process_time() < end:
            pass
    elif path == "/missing":
        status = "404 Not Found"
    elif path == "/fail":
        status = "503 Service Unavailable"
    elif path == "/boom":
        raise RuntimeError("the test app fails on purpose")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""

# ~10% failing, a few slower than 1 s (for the p99 alert), some CPU.
LOAD = (
    ["/"] * 120
    + ["/missing"] * 10
    + ["/fail"] * 8
    + ["/boom"] * 6
    + ["/slow?1.2"] * 6
    + ["/burn?0.2"] * 2
)
WORKERS = 2
QUEUED = 6  # connections left unaccepted while every worker is held


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every dashboard panel, variables substituted
    as Grafana does for "All" instances and a 1-minute rate interval."""
    dashboard = json.loads((DEPLOY / "grafana" / "gunicorn-dashboard.json").read_text())
    return [
        (p["title"], t["expr"].replace("$instance", ".*").replace("$__rate_interval", "1m"))
        for p in dashboard["panels"]
        for t in p["targets"]
    ]


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
    return [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]


# Alert conditions that hold only while every worker is held (checked then).
WHILE_SATURATED = {"GunicornAllWorkersBusy", "GunicornListenBacklogGrowing"}
# Alert conditions the load cannot make true (no full disk here): an empty vector.
NEVER_HERE = {"GunicornMetricsStorageErrors"}


@dataclass
class Run:
    gunicorn: Gunicorn
    prometheus: Prometheus
    sent: int = 0
    saturated: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests_before_kill: float = 0.0


def kit_config(agent_port: int, dead_port: int) -> dict[str, Any]:
    """The kit's direct scrape configuration, every second, pointed here."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "scrape-direct.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{agent_port}", f"127.0.0.1:{dead_port}"]}]
    return config


def load(g: Gunicorn, paths: list[str]) -> int:
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda p: http_get(g.port, p, timeout=30)[0], paths))
    assert len(statuses) == len(paths)
    return len(paths)


def saturate(run: Run) -> None:
    """Every worker held, connections queued one by one: the saturation
    queries and alert conditions, evaluated while it lasts."""
    g, prom = run.gunicorn, run.prometheus
    gate = g.tmp / "gate"
    holders = [
        threading.Thread(
            target=lambda n=n: http_get(g.port, f"/hold?h{n}", timeout=30), daemon=True
        )
        for n in range(WORKERS)
    ]
    with ExitStack() as stack:
        try:
            for n, t in enumerate(holders):
                t.start()
                wait_for(lambda n=n: (gate / f"h{n}.started").exists(), 10)
            for _ in range(QUEUED):
                stack.enter_context(socket.create_connection(("127.0.0.1", g.port), timeout=5))
                time.sleep(0.4)
            for name, expr in rule_exprs():
                if name in WHILE_SATURATED:
                    run.saturated[name] = wait_for(lambda e=expr: prom.vector(e), 15, message=name)
            for title, expr in panel_queries():
                if "in_flight" in expr or "busy" in expr or "backlog" in expr:
                    run.saturated[title + ": " + expr] = prom.vector(expr)
        finally:
            for n in range(WORKERS):
                (gate / f"h{n}.release").touch()
            for t in holders:
                t.join(15)
    run.sent += WORKERS


def kill_workers(run: Run) -> None:
    """One worker SIGKILLed (a crash), one aborted as Gunicorn aborts a
    worker past its timeout (SIGABRT: its worker_abort hook reports it)."""
    g, prom = run.gunicorn, run.prometheus
    run.requests_before_kill = _total_requests(prom)
    crashed, aborted = g.worker_pids()[:2]
    os.kill(crashed, signal.SIGKILL)
    g.wait_metrics(lambda s: crashed not in g.worker_pids() and len(g.worker_pids()) == WORKERS, 15)
    os.kill(aborted, signal.SIGABRT)
    g.wait_metrics(lambda s: aborted not in g.worker_pids() and len(g.worker_pids()) == WORKERS, 15)
    for reason in ("crash", "timeout"):
        wait_for(
            lambda r=reason: prom.vector(
                f'gunicorn_master_worker_restart_total{{reason="{r}"}} > 0'
            ),
            15,
            message=f"a {reason} restart in Prometheus",
        )


def _total_requests(prom: Prometheus) -> float:
    result = prom.vector('sum(gunicorn_worker_requests_total{job="gunicorn"})')
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("prometheus-real")
    (tmp / "gate").mkdir()
    (tmp / "metrics").mkdir()
    (tmp / "kit_app.py").write_text(APP)
    with Gunicorn(
        tmp,
        workers=WORKERS,
        app="kit_app:app",
        chdir=tmp,
        env={
            "TEST_GATE": str(tmp / "gate"),
            "GUNICORN_PROMETHEUS_SAMPLE_INTERVAL": "0.5",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        },
    ) as g:
        prom = Prometheus(tmp, kit_config(g.metrics_port, free_port()))
        try:
            wait_for(lambda: len(prom.vector('up{job="gunicorn"}')) == 2, 20, message="two targets")
            r = Run(g, prom)
            r.sent += load(g, LOAD)
            saturate(r)
            kill_workers(r)
            r.sent += load(g, LOAD[::2])  # after the kills: the same mix
            wait_for(lambda: _total_requests(prom) == r.sent, 15, message=f"{r.sent} requests")
            time.sleep(2)  # a few more scrapes and rule evaluations of the final state
            yield r
        finally:
            prom.stop()


@pytest.mark.parametrize(("title", "expr"), panel_queries(), ids=[t for t, _ in panel_queries()])
def test_every_dashboard_panel_has_data(run: Run, title: str, expr: str) -> None:
    result = run.prometheus.vector(expr)
    assert result, f"panel {title!r}: {expr} returned nothing"
    for sample in result:
        float(sample["value"][1])  # a number (NaN would be the string "NaN": no traffic)
        assert sample["value"][1] != "NaN", (title, expr, sample)


def test_panels_with_one_instance_selected(run: Run) -> None:
    """The instance variable with one value (the agent's target) narrows each panel to it."""
    instance = f"127.0.0.1:{run.gunicorn.metrics_port}"
    for title, expr in panel_queries():
        narrowed = expr.replace('instance=~".*"', f'instance=~"{instance}"')
        for sample in run.prometheus.vector(narrowed):
            assert sample["metric"].get("instance", instance) == instance, (title, sample)
        assert run.prometheus.vector(narrowed), title


@pytest.mark.parametrize(("name", "expr"), rule_exprs(), ids=[n for n, _ in rule_exprs()])
def test_every_rule_expression_evaluates_to_what_the_load_makes(
    run: Run, name: str, expr: str
) -> None:
    result = run.saturated[name] if name in WHILE_SATURATED else run.prometheus.vector(expr)
    if name in NEVER_HERE:
        assert result == [], (name, result)
        return
    assert result, f"{name}: {expr} returned nothing"
    for sample in result:
        assert sample["metric"].get("job") == "gunicorn", (name, sample)


def test_recording_rules_are_recorded(run: Run) -> None:
    for name, _ in rule_exprs():
        if name.startswith("instance:"):
            assert run.prometheus.vector(name), f"{name} has no recorded series"


def test_saturation_panels_saw_every_worker_busy(run: Run) -> None:
    values = {key: [float(s["value"][1]) for s in result] for key, result in run.saturated.items()}
    busy = next(v for k, v in values.items() if "sum(gunicorn_workers_busy" in k)
    in_flight = next(v for k, v in values.items() if "gunicorn_worker_requests_in_flight" in k)
    backlog = next(v for k, v in values.items() if "gunicorn_master_listen_backlog" in k)
    assert busy == [WORKERS]
    assert in_flight == [WORKERS]
    assert backlog and backlog[0] >= 1


def test_alerts_fire_on_the_real_series(run: Run) -> None:
    """The alerts the load makes true are active in Prometheus (pending or firing)."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{run.prometheus.port}/api/v1/alerts", timeout=10
    ) as r:
        active = {a["labels"]["alertname"] for a in json.load(r)["data"]["alerts"]}
    assert {"GunicornTargetDown", "GunicornWorkerCrashed", "GunicornWorkerTimeout"} <= active, (
        active
    )
    assert {"GunicornHighErrorRatio", "GunicornHighLatencyP99"} <= active, active


def test_counters_never_reset_across_a_worker_kill(run: Run) -> None:
    assert run.requests_before_kill > 0
    for counter in ("gunicorn_worker_requests_total", "gunicorn_worker_cpu_seconds_total"):
        resets = run.prometheus.vector(f'resets({counter}{{job="gunicorn"}}[1m])')
        assert resets, counter
        assert {float(s["value"][1]) for s in resets} == {0.0}, (counter, resets)
    assert _total_requests(run.prometheus) == run.sent  # exact, across the kill and the abort


def test_no_scrape_errors(run: Run) -> None:
    instance = f"127.0.0.1:{run.gunicorn.metrics_port}"
    (up,) = run.prometheus.vector(f'up{{instance="{instance}"}}')
    assert up["value"][1] == "1"
    added = run.prometheus.vector(f'scrape_samples_post_metric_relabeling{{instance="{instance}"}}')
    assert float(added[0]["value"][1]) > 100


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian's prometheus package)")
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_promtool_check_metrics_is_clean_on_the_text_format(run: Run) -> None:
    text = run.gunicorn.scrape(headers={"Accept": "text/plain"})
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # no lint finding either


def test_promtool_check_metrics_on_openmetrics_finds_what_it_finds_in_prometheus_client(
    run: Run,
) -> None:
    """promtool 2.42 reads OpenMetrics with its text-format parser: a
    counter's `# HELP x` and its sample `x_total` look like two families to
    it, so it reports "no help text" for every counter, exactly as for
    prometheus_client's own OpenMetrics rendering of the same directory
    (the oracle), and nothing else."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.openmetrics.exposition import generate_latest

    ours = run.gunicorn.scrape(headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert ours.endswith("# EOF\n")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(run.gunicorn.tmp / "metrics"))
    theirs = generate_latest(registry).decode()
    findings = [promtool_check_metrics(text).stderr.splitlines() for text in (ours, theirs)]
    assert findings[0] == findings[1]
    assert findings[0], "promtool reads OpenMetrics counters as it did"
    for line in findings[0]:
        assert line.endswith("_total no help text"), line


def test_promtool_check_metrics_finds_a_broken_exposition() -> None:
    """The check above can fail: a counter without _total and a bad line are named."""
    result = promtool_check_metrics("# TYPE broken counter\nbroken 1\nthis is not a sample\n")
    assert result.returncode != 0
