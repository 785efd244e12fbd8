"""Bad files in the multiprocess directory: skipped, named in a warning, and
the scrape still succeeds with everything else."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

import gunicorn_prometheus_exporter as exporter


@pytest.fixture
def mp_dir(mp_dir: Path) -> Path:
    """conftest's directory, holding a good counter."""
    Counter("good", "A good counter", registry=None).inc(7)
    return mp_dir


def truncated(path: Path) -> None:
    # A header claiming 4 KiB used in a 100-byte file.
    path.write_bytes(struct.pack("<II", 4096, 0) + b"\0" * 92)


def entry_past_end(path: Path) -> None:
    body = struct.pack("<i", 500) + b"k" * 20
    path.write_bytes(struct.pack("<II", 8 + len(body), 0) + body)


def bad_json(path: Path) -> None:
    key = b"{not json"
    padded = key + b" " * (8 - (len(key) + 4) % 8)
    body = struct.pack("<i", len(key)) + padded + struct.pack("<dd", 1.0, 0.0)
    path.write_bytes(struct.pack("<II", 8 + len(body), 0) + body)


def bad_utf8(path: Path) -> None:
    key = b'["m", "m", {"a": "\xff"}, "h"]'
    padded = key + b" " * (8 - (len(key) + 4) % 8)
    body = struct.pack("<i", len(key)) + padded + struct.pack("<dd", 1.0, 0.0)
    path.write_bytes(struct.pack("<II", 8 + len(body), 0) + body)


CASES = {
    "empty": ("counter_111.db", lambda p: p.write_bytes(b"")),
    "short header": ("counter_112.db", lambda p: p.write_bytes(b"\x01\x02")),
    "truncated": ("histogram_113.db", truncated),
    "entry past end": ("summary_114.db", entry_past_end),
    "key not json": ("gauge_all_115.db", bad_json),
    "key not utf-8": ("counter_116.db", bad_utf8),
    "foreign name": ("sessions_117.db", lambda p: p.write_bytes(b"whatever")),
    "gauge without pid": ("gauge_all.db", lambda p: p.write_bytes(b"whatever")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_is_skipped_with_a_warning_naming_it(
    mp_dir: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, make = CASES[case]
    make(mp_dir / name)
    with caplog.at_level(logging.WARNING, logger="gunicorn_prometheus_exporter"):
        body = exporter.render_directory(str(mp_dir))
        registry = CollectorRegistry()
        exporter.MultiProcessCollector(registry, path=str(mp_dir))
        collected = generate_latest(registry)
    assert (
        body
        == collected
        == b"# HELP good_total A good counter\n# TYPE good_total counter\ngood_total 7.0\n"
    )
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all(name in m for m in messages), messages


def test_files_being_created_are_not_errors(mp_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A writer that has sized its new file but not written the header yet.
    (mp_dir / "counter_118.db").write_bytes(b"\0" * 65536)
    with caplog.at_level(logging.WARNING, logger="gunicorn_prometheus_exporter"):
        body = exporter.render_directory(str(mp_dir))
    assert b"good_total 7.0" in body
    assert not caplog.records


def test_corrupt_own_file_is_set_aside_and_a_fresh_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt file left by a former process with our pid never crashes us."""
    import os

    exporter.enable_native_values(str(tmp_path))
    try:
        own = tmp_path / f"counter_{os.getpid()}.db"
        truncated(own)
        with caplog.at_level(logging.WARNING, logger="gunicorn_prometheus_exporter"):
            Counter("fresh", "f", registry=None).inc()
        assert (tmp_path / f"counter_{os.getpid()}.db.corrupt").exists()
        assert any(str(own) in r.getMessage() for r in caplog.records)
        assert b"fresh_total 1.0" in exporter.render_directory(str(tmp_path))
    finally:
        exporter.disable_native_values()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        exporter.render_directory(str(tmp_path / "nope"))
