"""Fixtures shared by the test files, used by name (no imports):

* ``exporter_wheel``, ``environments``: for the tests that install the
  exporter's wheel into fresh virtual environments (older Gunicorn and
  prometheus_client releases); the wheel is built once per session, in the
  background, and waited for on first use.
* ``mp_dir``: a multiprocess directory with native values on.
* ``redis``: a redis-server of its own for one test; ``redis_srv``: one per
  test module, every database flushed before each test; ``rclient``: our
  ``RedisClient`` on ``redis_srv``. Helpers of the Redis tests are in
  redis_support.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gunicorn_runner import ROOT, clean_env
from redis_server import RedisServer
from redis_support import _OUR_VARIABLES

if TYPE_CHECKING:
    from gunicorn_prometheus_exporter.backend import RedisClient

PIP_NETWORK = ["--timeout", "20", "--retries", "1", "--disable-pip-version-check"]


def run(
    args: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def tail(result: subprocess.CompletedProcess[str], n: int = 2500) -> str:
    return (result.stdout + result.stderr)[-n:]


def python_env() -> dict[str, str]:
    """This environment without anything that would point Python elsewhere."""
    return {
        k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }


class WheelBuild:
    """``pip wheel`` of the project, started at once, waited for on first use;
    or, when GPE_TEST_WHEEL names a wheel file (CI's repaired wheel for this
    Python), that wheel."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        given = os.environ.get("GPE_TEST_WHEEL")
        if given:
            self._wheel: Path | None = Path(given)
            assert self._wheel.is_file(), f"GPE_TEST_WHEEL={given} is not a file"
            self.proc: subprocess.Popen[bytes] | None = None
            return
        self.log_path = directory / "pip-wheel.log"
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                *PIP_NETWORK,
                "-w",
                str(directory),
                str(ROOT),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=python_env(),
        )
        self._wheel = None

    def wheel(self) -> Path:
        if self._wheel is None and self.proc is not None:
            try:
                code = self.proc.wait(600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
            self._log.close()
            log = self.log_path.read_text(errors="replace")
            wheels = sorted(self.directory.glob("gunicorn_prometheus_exporter-*.whl"))
            assert code == 0 and len(wheels) == 1, f"pip wheel failed ({code}):\n{log[-4000:]}"
            self._wheel = wheels[0]
        assert self._wheel is not None
        return self._wheel

    def cancel(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


@pytest.fixture(scope="session")
def exporter_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WheelBuild]:
    build = WheelBuild(tmp_path_factory.mktemp("wheel"))
    yield build
    build.cancel()


@pytest.fixture(scope="session")
def environments(tmp_path_factory: pytest.TempPathFactory, exporter_wheel: WheelBuild) -> Any:
    """Virtual environments with other Gunicorn releases (tests/venvs.py), made on first use."""
    from venvs import Environments

    return Environments(tmp_path_factory.mktemp("venvs"), exporter_wheel)


@pytest.fixture
def mp_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` as the multiprocess directory, native values on."""
    # The package is imported on use: importing it enables native values
    # when PROMETHEUS_MULTIPROC_DIR is set, which is for the tests to decide.
    import gunicorn_prometheus_exporter as exporter

    exporter.enable_native_values(str(tmp_path))
    yield tmp_path
    exporter.disable_native_values()


@pytest.fixture
def no_exporter_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This test's environment without any of the exporter's Redis variables."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def _module_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis_srv(_module_redis: RedisServer) -> RedisServer:
    """The test module's redis-server, running, with empty databases."""
    from gunicorn_prometheus_exporter.backend import RedisClient

    if _module_redis.process is None or _module_redis.process.poll() is not None:
        _module_redis.start()
    RedisClient(**_module_redis.client_kwargs()).execute_command("FLUSHALL")
    return _module_redis


@pytest.fixture
def rclient(redis_srv: RedisServer) -> RedisClient:
    """Our RedisClient on ``redis_srv``."""
    from gunicorn_prometheus_exporter.backend import RedisClient

    return RedisClient(**redis_srv.client_kwargs())


@pytest.fixture
def series_layout() -> Iterator[None]:
    """Mirrors write the 0.2.x series layout (REDIS_LAYOUT=series) in this
    test: for the tests of that layout's keys."""
    RedisServer.layout = "series"
    try:
        yield
    finally:
        RedisServer.layout = None
