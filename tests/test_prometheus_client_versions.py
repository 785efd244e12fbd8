"""The exporter with the oldest prometheus_client it supports (0.17).

The wheel (built once per session, see conftest.py) is installed with
prometheus_client 0.17.1 into a fresh virtual environment. There, native
values must be used for every metric type and gauge mode, a forked child must
write its own file, and our reader and prometheus_client 0.17's own collector
must agree on every sample of the directory. (0.17 orders samples
differently from the latest release, which our exposition follows, so the
samples are compared, not the bytes.)

Needs PyPI: skipped (with the reason) when prometheus_client 0.17.1 cannot be
installed from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import PIP_NETWORK, WheelBuild, python_env, run, tail

VERSION = "0.17.1"

SCRIPT = r"""
import json, os, sys
import gunicorn_prometheus_exporter as exporter
from gunicorn_prometheus_exporter.native_values import NativeValue
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

assert prometheus_client.values.ValueClass is NativeValue
counter = Counter("jobs", "Jobs done", ["kind"])
histogram = Histogram("latency", "Latency", buckets=[0.1, 1])
summary = Summary("size", "Size")
gauges = {mode: Gauge(f"g_{mode}", "Gauge", multiprocess_mode=mode)
          for mode in sorted(Gauge._MULTIPROC_MODES)}  # 0.17 has no mostrecent modes yet
assert isinstance(counter.labels("a")._value, NativeValue)

def work(n):
    counter.labels("a").inc(n)
    counter.labels('q"\\\n').inc()
    histogram.observe(0.05 * n)
    summary.observe(n)
    for mode, gauge in gauges.items():
        gauge.set(n)

work(1)
pid = os.fork()
if pid == 0:
    work(2)
    os._exit(0)
os.waitpid(pid, 0)

def samples(text):
    return sorted((s.name, sorted(s.labels.items()), s.value)
                  for family in text_string_to_metric_families(text) for s in family.samples)

registry = CollectorRegistry()
MultiProcessCollector(registry)
theirs = samples(generate_latest(registry).decode())
ours = samples(exporter.render_directory().decode())
print(json.dumps({"equal": ours == theirs, "ours": ours, "theirs": theirs,
                  "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
"""


def test_oldest_supported_prometheus_client(tmp_path: Path, exporter_wheel: WheelBuild) -> None:
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], 180, env=python_env())
    assert made.returncode == 0, tail(made)
    python = str(venv / "bin" / "python")
    installed = run(
        [python, "-m", "pip", "install", *PIP_NETWORK, f"prometheus_client=={VERSION}"],
        240,
        env=python_env(),
    )
    if installed.returncode != 0:
        pytest.skip(
            f"PyPI unreachable? could not install prometheus_client=={VERSION}: {tail(installed, 500)}"
        )
    wheel = exporter_wheel.wheel()
    installed = run(
        [python, "-m", "pip", "install", *PIP_NETWORK, str(wheel)], 300, env=python_env()
    )
    assert installed.returncode == 0, tail(installed)

    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**python_env(), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = run([python, "-c", SCRIPT], 120, env=env)
    assert done.returncode == 0, tail(done)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"], json.dumps(result, indent=1)
    names = result["files"]
    assert any(name.startswith("counter_") for name in names), names
    assert len([n for n in names if n.startswith("counter_")]) == 2, names  # parent and child
    jobs = {
        tuple(map(tuple, labels)): value
        for name, labels, value in result["ours"]
        if name == "jobs_total"
    }
    assert jobs[(("kind", "a"),)] == 3.0
