"""A full filesystem never reaches the app: real Gunicorn whose multiprocess
directory is a small tmpfs mounted by the test, filled by the app's own
metrics (a new series per request) while requests keep coming. Files are
allocated before they are mapped, so a full disk is an error, never a
SIGBUS: workers keep serving, values that find no room stay exact in their
process's memory, one warning names the directory and the cause, a
self-metric counts the failures, and the master survives restarts of
workers that cannot create files at all."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_runner import Gunicorn, value, wait_for

FILLING_APP = textwrap.dedent("""
    from prometheus_client import Counter

    seen = Counter("app_seen", "a new series per request: fills the directory", ["request"])


    def app(environ, start_response):
        seen.labels(environ.get("QUERY_STRING", "") * 40).inc()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
""")

REQUESTS = 1500


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "mp"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the tests run as root in CI)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_directory_costs_metrics_never_requests(tmp_path: Path, small_tmpfs: Path) -> None:
    (tmp_path / "filling_app.py").write_text(FILLING_APP)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(small_tmpfs)}
    with Gunicorn(tmp_path, workers=2, app="filling_app:app", chdir=tmp_path, env=env) as g:
        workers = set(g.worker_pids())
        statuses = [g.status(f"/?{i}") for i in range(REQUESTS)]
        assert statuses.count(200) >= 0.99 * REQUESTS, {s: statuses.count(s) for s in set(statuses)}
        assert g.proc.poll() is None, "the master must survive"
        assert set(g.worker_pids()) == workers, f"no worker may die:\n{g.log()[-3000:]}"

        samples = g.wait_metrics(
            lambda s: value(s, "gunicorn_exporter_storage_errors_total") > 0,
            what="storage errors counted",
        )
        # series made before the disk filled stay exact in the files
        assert value(samples, "gunicorn_worker_requests_total") == REQUESTS
        assert value(samples, "gunicorn_master_worker_restart_total", reason="crash") == 0
        log = g.log()
        warnings = [line for line in log.splitlines() if "cannot store metrics in" in line]
        assert warnings and all(
            str(small_tmpfs) in line and "No space left on device" in line for line in warnings
        ), log[-3000:]
        assert len(warnings) <= 3, warnings  # once per process (master, two workers), not per value

        # workers that cannot create a single file still boot and serve
        g.signal(signal.SIGHUP)
        wait_for(
            lambda: not set(g.worker_pids()) & workers and len(g.worker_pids()) == 2,
            20,
            message=lambda: f"new workers after HUP:\n{g.log()[-3000:]}",
        )
        assert [g.status(f"/?after-{i}") for i in range(50)] == [200] * 50
        assert g.proc.poll() is None
        assert "Traceback" not in g.log().split("Handling signal: hup", 1)[-1]
