"""A fleet in Redis mode under churn, as Prometheus sees it: Debian's
`prometheus` scrapes a sidecar (the agent with ``--source redis``) every half
second while real Gunicorn instances serve a steady load, one stops
gracefully, one is SIGKILLed (master, workers and agent) and one starts.
Prometheus records zero counter resets on every series, the fleet's total
never goes down, and it ends at exactly the requests answered."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_runner import Agent, Gunicorn, value, wait_for
from prometheus_server import Prometheus, needs_prometheus
from redis_server import RedisServer

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = [needs_prometheus, pytest.mark.interpreter_independent]

COUNTERS = (
    "gunicorn_worker_requests_total",
    "gunicorn_worker_request_duration_seconds_count",
    "gunicorn_worker_request_duration_seconds_bucket",
)


class Load:
    """Requests, one after another, to each instance in `targets` in turn."""

    def __init__(self) -> None:
        self.targets: list[Gunicorn] = []
        self.sent = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for turn in itertools.count():
            if self._stop.is_set():
                return
            with self.lock:  # a target is taken out under the lock, never mid-request
                if self.targets:
                    assert self.targets[turn % len(self.targets)].status("/") == 200
                    self.sent += 1
            time.sleep(0.005)

    def remove(self, g: Gunicorn) -> None:
        with self.lock:
            self.targets.remove(g)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def start_instance(tmp: Path, redis: RedisServer, name: str) -> Gunicorn:
    env = {
        **redis.env(),
        "REDIS_INSTANCE_ID": name,
        "REDIS_FLUSH_INTERVAL": "0.2",
        "REDIS_TTL_SECONDS": "2",
    }
    g = Gunicorn(tmp, workers=2, env=env, wait_ready=False, name=name)
    g.wait_serving()
    return g


@pytest.fixture
def fleet(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[Agent, Prometheus, Load]]:
    sidecar = Agent(
        tmp_path,
        ["--source", "redis"],
        name="sidecar",
        env={k: v for k, v in redis.env().items() if k != "REDIS_ENABLED"},
    )
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "scrape_configs": [
            {"job_name": "fleet", "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"]}]}
        ],
    }
    prometheus = Prometheus(tmp_path, config)
    load = Load()
    try:
        yield sidecar, prometheus, load
    finally:
        load.stop()
        prometheus.stop()
        sidecar.stop()


def sidecar_total(sidecar: Agent) -> float:
    return value(sidecar.samples(), "gunicorn_worker_requests_total")


def test_prometheus_sees_no_reset_through_instance_churn(
    tmp_path: Path, redis: RedisServer, fleet: tuple[Agent, Prometheus, Load]
) -> None:
    sidecar, prom, load = fleet
    instances = {
        name: start_instance(tmp_path, redis, name) for name in ("hostA", "hostB", "hostC")
    }
    try:
        load.targets.extend(instances.values())
        time.sleep(3)
        load.remove(instances["hostA"])
        instances.pop("hostA").stop()  # graceful: its agent folds its node on the way out
        time.sleep(2)
        # No request to B is left unmirrored when it dies: what it answered is
        # in Redis (the sidecar shows it) before the SIGKILL.
        load.remove(instances["hostB"])
        with load.lock:
            wait_for(lambda: sidecar_total(sidecar) == load.sent, 10, message="B's last pass")
        killed = instances.pop("hostB")
        os.killpg(killed.pid, signal.SIGKILL)
        time.sleep(2)
        instances["hostD"] = start_instance(tmp_path, redis, "hostD")
        load.targets.append(instances["hostD"])
        time.sleep(6)  # B's TTL (2 s) passes and a reader folds it
        load.stop()
        killed.stop()
        sent = load.sent
        assert sent > 200

        def prometheus_total() -> float:
            result = prom.vector('sum(gunicorn_worker_requests_total{job="fleet"})')
            return float(result[0]["value"][1]) if result else -1.0

        wait_for(lambda: prometheus_total() == sent, 10, message=f"{sent} requests in Prometheus")
        time.sleep(1)  # one more scrape of the final state
        for counter in COUNTERS:
            resets = prom.vector(f'resets({counter}{{job="fleet"}}[5m])')
            assert resets, counter
            assert {float(s["value"][1]) for s in resets} == {0.0}, (counter, resets)
        # The fleet's total, scrape by scrape: never down, also while B was folded.
        (series,) = prom.query('sum(gunicorn_worker_requests_total{job="fleet"})[5m:500ms]')[
            "result"
        ]
        totals = [float(v) for _, v in series["values"]]
        assert all(b >= a for a, b in itertools.pairwise(totals)), totals
        (up,) = prom.vector('min_over_time(up{job="fleet"}[5m])')
        assert up["value"][1] == "1"  # every scrape of the sidecar succeeded
    finally:
        for g in instances.values():
            g.stop()
