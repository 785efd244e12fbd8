"""Shared by the tests that install the exporter's wheel into fresh virtual
environments (older Gunicorn and prometheus_client releases): the wheel is
built once per session, in the background, and waited for on first use."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn_runner import ROOT, clean_env

PIP_NETWORK = ["--timeout", "20", "--retries", "1", "--disable-pip-version-check"]


def run(args: list[str], timeout: float, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def tail(result: subprocess.CompletedProcess[str], n: int = 2500) -> str:
    return (result.stdout + result.stderr)[-n:]


def python_env() -> dict[str, str]:
    """This environment without anything that would point Python elsewhere."""
    return {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


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
            [sys.executable, "-m", "pip", "wheel", "--no-deps", *PIP_NETWORK, "-w", str(directory), str(ROOT)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=python_env())
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
