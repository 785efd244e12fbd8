"""End to end with older Gunicorn releases: 21.2.0 (sync) and 23.0.0 (sync,
and eventlet, the worker class Gunicorn 23 still ships).

The exporter's wheel is built once per session (``pip wheel``, in the
background while the virtual environments are made) and installed, with one
Gunicorn release each, into a fresh virtual environment; Gunicorn runs from
there with the exporter's config and 2 workers. A known set of requests
(200, 404, 503 and an application that raises) must give exact counts by
method and status class, and those counts must survive every original worker
being killed with SIGKILL.

Needs PyPI: skipped (with the reason) when Gunicorn cannot be installed from it.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from gunicorn_runner import (
    LIVEALL,
    Gunicorn,
    alive,
    cmdline,
    labelled,
    pids_of,
    value,
    wait_for,
)
from venvs import Environments, VenvGunicorn

REQUESTS = "gunicorn_worker_requests_total"

# (path, expected status, how many)
PLAN = [("/", 200, 6), ("/missing", 404, 3), ("/fail", 503, 2), ("/boom", 500, 2)]
EXPECTED_REQUESTS = {("GET", "2xx"): 6, ("GET", "4xx"): 3, ("GET", "5xx"): 4}
EXPECTED_FAILED = {"GET": 4}  # 503s and the raised ones
EXPECTED_ERRORS = {"500": 2}  # the two raised requests, answered 500 by Gunicorn
TOTAL = sum(n for _, _, n in PLAN)

CASES = [
    pytest.param("21.2.0", "sync", id="gunicorn-21.2.0-sync"),
    pytest.param("23.0.0", "sync", id="gunicorn-23.0.0-sync"),
    pytest.param("23.0.0", "eventlet", id="gunicorn-23.0.0-eventlet"),
]


# ----------------------------------------------------------------- tests ----


def nonzero(samples: list, name: str, *keys: str) -> dict:
    """Non-zero values of name, keyed by the values of the labels keys."""
    out = {}
    for labels, v in labelled(samples, name).items():
        if v:
            ls = dict(labels)
            key = tuple(ls[k] for k in keys)
            out[key if len(key) > 1 else key[0]] = v
    return out


def counts(samples: list) -> dict:
    return {
        "requests": nonzero(samples, REQUESTS, "method", "status"),
        "failed": nonzero(samples, "gunicorn_worker_failed_requests_total", "method"),
        "errors": nonzero(samples, "gunicorn_worker_error_handling_total", "status"),
        "durations": value(samples, "gunicorn_worker_request_duration_seconds_count"),
    }


EXPECTED = {
    "requests": EXPECTED_REQUESTS,
    "failed": EXPECTED_FAILED,
    "errors": EXPECTED_ERRORS,
    "durations": float(TOTAL),
}


def replaced(g: Gunicorn, victim: int, before: set[int]) -> Callable[[], set[int] | None]:
    """2 workers, the victim not among them, each with its gauges on /metrics."""

    def check() -> set[int] | None:
        pids = set(g.worker_pids())
        if len(pids) != 2 or victim in pids or alive(victim):
            return None
        samples = g.samples()
        for name in LIVEALL:
            if pids_of(samples, name) - {g.pid} != pids:
                return None
        return pids

    return check


@pytest.mark.parametrize(("version", "worker"), CASES)
def test_counts_with_an_older_gunicorn(
    environments: Environments, tmp_path: Path, version: str, worker: str
) -> None:
    python = environments.python(version, worker)
    with VenvGunicorn(tmp_path, python, worker) as g:
        assert f"Starting gunicorn {version}" in g.log()
        agents = g.agent_pids()
        assert len(agents) == 1
        assert Path(cmdline(agents[0])[0]).resolve().is_relative_to(python.parent.parent.resolve())

        for path, status, n in PLAN:
            for _ in range(n):
                assert g.status(path) == status, path
        expected = copy.deepcopy(EXPECTED)
        samples = g.wait_metrics(
            lambda s: (
                value(s, REQUESTS) >= TOTAL
                and value(s, "gunicorn_worker_request_duration_seconds_count") >= TOTAL
            ),
            what=f"{TOTAL} requests",
        )
        assert counts(samples) == expected

        # every worker that served them killed with SIGKILL: nothing lost
        originals = set(g.worker_pids())
        assert len(originals) == 2
        current = originals
        for victim in sorted(originals):
            os.kill(victim, signal.SIGKILL)
            current = wait_for(
                replaced(g, victim, current),
                15,
                message=lambda victim=victim: f"a replacement for {victim}:\n{g.log()[-3000:]}",
            )
        assert not current & originals
        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_master_worker_restart_total", reason="crash") >= 2,
            what="2 crashes counted",
        )
        assert value(samples, "gunicorn_master_worker_restart_total", reason="crash") == 2
        assert value(samples, "gunicorn_master_worker_restart_total") == 2
        assert counts(samples) == expected
        for name in LIVEALL:
            assert not pids_of(samples, name) & originals, name

        # the replacements count on top
        for _ in range(4):
            assert g.status("/") == 200
        samples = g.wait_metrics(
            lambda s: value(s, REQUESTS) >= TOTAL + 4, what=f"{TOTAL + 4} requests"
        )
        expected["requests"][("GET", "2xx")] += 4
        expected["durations"] += 4
        assert counts(samples) == expected
