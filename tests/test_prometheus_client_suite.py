"""prometheus_client's own tests/test_multiprocess.py on our native values.

The test file comes from the sdist of the installed prometheus_client release
and runs unchanged in a subprocess, with tests/prometheus_client_suite_plugin.py
loaded first (``-p``), so that the names the test module imports are ours:

- mode "values": our values write (``values.MultiProcessValue`` and so
  ``get_value_class()`` give native values), prometheus_client's
  ``MultiProcessCollector`` and ``mark_process_dead`` read;
- mode "both": ours on both sides.

Every test of the file must pass in both modes (TestMmapedDict tests
prometheus_client's MmapedDict itself, which stays theirs). Needs PyPI:
skipped, with the reason, when the sdist cannot be downloaded.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import PIP_NETWORK, python_env, run, tail

HERE = Path(__file__).resolve().parent
VERSION = importlib.metadata.version("prometheus_client")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_multiprocess.py of the installed release, alone in a directory
    (so that the sdist's prometheus_client sources are not imported)."""
    downloads = tmp_path_factory.mktemp("sdist")
    fetched = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            *PIP_NETWORK,
            "--no-binary",
            ":all:",
            "--no-deps",
            "-d",
            str(downloads),
            f"prometheus_client=={VERSION}",
        ],
        240,
        env=python_env(),
    )
    archives = sorted(downloads.glob("prometheus_client-*.tar.gz"))
    if fetched.returncode != 0 or len(archives) != 1:
        pytest.skip(
            f"could not download the sdist of prometheus_client=={VERSION}: {tail(fetched, 500)}"
        )
    with tarfile.open(archives[0]) as archive:
        member = next(
            m for m in archive.getmembers() if m.name.endswith("/tests/test_multiprocess.py")
        )
        source = archive.extractfile(member)
        assert source is not None
        directory = tmp_path_factory.mktemp("suite")
        (directory / "test_multiprocess.py").write_bytes(source.read())
    (directory / "pytest.ini").write_text("[pytest]\n")  # not ours, not theirs
    return directory / "test_multiprocess.py"


def count_tests(path: Path) -> int:
    """The test methods of the file's unittest classes and its test functions."""
    tree = ast.parse(path.read_text())
    count = 0
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            count += sum(
                1
                for item in node.body
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
            )
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            count += 1
    return count


@pytest.mark.parametrize("mode", ["values", "both"])
def test_prometheus_client_multiprocess_suite(suite: Path, mode: str) -> None:
    report = suite.parent / f"report-{mode}.xml"
    env = {k: v for k, v in python_env().items() if k.lower() != "prometheus_multiproc_dir"}
    env.update(GPE_SUITE_MODE=mode, PYTHONPATH=str(HERE))
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "prometheus_client_suite_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            suite.name,
        ],
        300,
        env=env,
        cwd=suite.parent,
    )
    output = tail(result, 6000)
    assert result.returncode == 0, output
    suites = ET.parse(report).getroot()
    totals = {
        key: sum(int(s.get(key, 0)) for s in suites.iter("testsuite"))
        for key in ("tests", "failures", "errors", "skipped")
    }
    expected = count_tests(suite)
    assert expected >= 30, f"only {expected} tests found in {suite}"  # the parser still works
    assert totals == {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}, output
    assert f"{expected} passed" in result.stdout, output


def test_plugin_refuses_prometheus_clients_own_names(tmp_path: Path) -> None:
    """A test module that still holds prometheus_client's MultiProcessValue
    (had it been imported before the plugin) makes the run fail, not pass."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(
        "from gunicorn_prometheus_exporter.native_values import _client_multi_process_value\n"
        "MultiProcessValue = _client_multi_process_value\n"
        "def test_nothing():\n    pass\n"
    )
    env = python_env()
    env.update(GPE_SUITE_MODE="values", PYTHONPATH=str(HERE))
    refused = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "prometheus_client_suite_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "test_probe.py",
        ],
        120,
        env=env,
        cwd=tmp_path,
    )
    assert refused.returncode != 0, tail(refused)
    assert "test_probe.MultiProcessValue is not gunicorn_prometheus_exporter's" in tail(refused)
