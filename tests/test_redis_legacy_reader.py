"""The series layout (REDIS_LAYOUT=series) stays readable by the release we
replace: gunicorn-prometheus-exporter 0.2.4's own RedisMultiProcessCollector,
installed from PyPI in a virtual environment of its own, reads what our
mirror wrote and finds the same counters and histograms as our reader - the
mixed fleet of a migration, where old sidecars still scrape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend import RedisClient, RedisMultiProcessCollector

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

LEGACY = "gunicorn-prometheus-exporter==0.2.4"

# Run in the 0.2.4 environment: its collector's merge, as JSON samples.
READ_WITH_LEGACY = """
import json, sys
import redis
from gunicorn_prometheus_exporter.backend.core.collector import RedisMultiProcessCollector

client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
out = []
for metric in RedisMultiProcessCollector.merge_from_redis(client, "gunicorn"):
    for s in metric.samples:
        out.append([metric.type, s.name, sorted(s.labels.items()), s.value])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def legacy_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("legacy-0.2.4")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", LEGACY, "redis"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"pip install {LEGACY}: {done.stderr[-2000:]}"
    return python


def _write(directory: Path) -> None:
    for pid, n in ((101, 3.0), (102, 4.0)):
        counters = MmapedDict(str(directory / f"counter_{pid}.db"))
        for method in ("GET", "POST"):
            key = mmap_key("reqs", "reqs_total", ("method",), (method,), "Requests.")
            counters.write_value(key, n, 0.0)
        counters.close()
        histogram = MmapedDict(str(directory / f"histogram_{pid}.db"))
        for le, v in (("0.5", 1.0), ("1.0", 2.0), ("+Inf", 0.0)):
            key = mmap_key("lat", "lat_bucket", ("le",), (le,), "Latency.")
            histogram.write_value(key, v, 0.0)
        histogram.write_value(mmap_key("lat", "lat_sum", (), (), "Latency."), 1.25, 0.0)
        histogram.close()


def _aggregated(samples: list) -> dict:
    return {
        (name, tuple(map(tuple, labels))): value
        for typ, name, labels, value in samples
        if typ in ("counter", "histogram")
    }


def test_0_2_4_reads_what_the_series_layout_mirror_wrote(
    tmp_path: Path, rclient: RedisClient, redis_srv, legacy_python: Path
) -> None:
    _write(tmp_path)
    mirror = _native.MirrorService(
        rclient.native, str(tmp_path), "gunicorn", "web-1", 300, 1.0, lambda *_: None, "series"
    )
    assert mirror.pass_now()
    ours = [
        [m.type, s.name, sorted(s.labels.items()), s.value]
        for m in RedisMultiProcessCollector(None, rclient).collect()
        for s in m.samples
    ]
    done = subprocess.run(
        [str(legacy_python), "-c", READ_WITH_LEGACY, str(redis_srv.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout)
    expected = _aggregated(ours)
    assert expected[("reqs_total", (("method", "GET"),))] == 7.0
    assert expected[("lat_count", ())] == 6.0
    assert _aggregated(theirs) == expected
