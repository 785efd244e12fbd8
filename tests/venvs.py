"""Virtual environments with other Gunicorn releases and the exporter's
wheel installed (tests/test_gunicorn_versions.py, tests/test_legacy_configs.py),
and a Gunicorn run from them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PIP_NETWORK, WheelBuild, python_env, run, tail
from gunicorn_runner import CONFIG, DEMO_DIR, Gunicorn, free_port


class Environments:
    """One virtual environment per Gunicorn release, made on first use."""

    def __init__(self, base: Path, build: WheelBuild) -> None:
        self.base = base
        self.build = build
        self._made: dict[str, Path] = {}
        self._eventlet: dict[str, str | None] = {}  # version -> why not, None when installed
        self.unreachable: str | None = None

    def pip(self, venv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", *PIP_NETWORK, *args],
            timeout,
            env=python_env(),
        )

    def venv(self, version: str) -> Path:
        if self.unreachable:
            self.build.cancel()
            pytest.skip(self.unreachable)
        if version in self._made:
            return self._made[version]
        venv = self.base / f"gunicorn-{version}"
        shutil.rmtree(venv, ignore_errors=True)
        made = run([sys.executable, "-m", "venv", str(venv)], 180, env=python_env())
        assert made.returncode == 0, f"python -m venv failed:\n{tail(made)}"
        # Gunicorn alone first: a failure here is PyPI out of reach, not the exporter.
        try:
            installed = self.pip(venv, f"gunicorn=={version}", timeout=240)
            reason = None if installed.returncode == 0 else tail(installed, 500)
        except subprocess.TimeoutExpired:
            reason = "pip timed out"
        if reason is not None:
            self.unreachable = f"PyPI unreachable? could not install gunicorn=={version}: {reason}"
            self.build.cancel()
            pytest.skip(self.unreachable)
        if version.split(".")[0] == "23":
            # Gunicorn 23 still ships the eventlet worker (removed later).
            extra = self.pip(venv, f"gunicorn[eventlet]=={version}", timeout=240)
            self._eventlet[version] = None if extra.returncode == 0 else tail(extra, 1000)
        wheel = self.build.wheel()
        installed = self.pip(venv, str(wheel))
        assert installed.returncode == 0, f"installing {wheel.name} failed:\n{tail(installed)}"
        check = run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import gunicorn, gunicorn_prometheus_exporter as g; print(gunicorn.__version__, g.__file__)",
            ],
            60,
            env=python_env(),
        )
        assert check.returncode == 0, tail(check)
        got_version, package = check.stdout.split()
        assert got_version == version
        assert Path(package).resolve().is_relative_to(venv.resolve()), package
        self._made[version] = venv
        return venv

    def python(self, version: str, worker: str) -> Path:
        venv = self.venv(version)
        if worker == "eventlet":
            why = self._eventlet.get(version, "not tried")
            if why is not None:
                pytest.skip(f"eventlet does not install with gunicorn {version}: {why}")
        return venv / "bin" / "python"


class VenvGunicorn(Gunicorn):
    """gunicorn_runner's Gunicorn, run by another environment's Python
    (and without the options older releases do not know). ``worker_class``
    None leaves the class to the configuration file."""

    def __init__(
        self,
        tmp: Path,
        python: Path,
        worker_class: str | None,
        workers: int = 2,
        config: str = CONFIG,
        chdir: Path = DEMO_DIR,
        app: str = "app:app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = Path(tmp)
        self.workers = workers
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = self.tmp / f"gunicorn-{self.port}.log"
        self.env = python_env()
        self.env.update(
            {
                "PROMETHEUS_METRICS_PORT": str(self.metrics_port),
                "PROMETHEUS_BIND_ADDRESS": "127.0.0.1",
                "GUNICORN_PROMETHEUS_SAMPLE_INTERVAL": "0.2",
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
        )
        self.args = [
            str(python),
            "-m",
            "gunicorn",
            "-c",
            config,
            "-w",
            str(workers),
            *(["-k", worker_class] if worker_class else []),
            "-b",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(chdir),
            "--graceful-timeout",
            "1",
            app,
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(self.tmp),
        )
        self.pid = self.proc.pid
        try:
            self.wait_ready(30)
        except BaseException:
            self.stop()
            raise
