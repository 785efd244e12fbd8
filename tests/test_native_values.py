"""Native values behind prometheus_client's API: files, fork, threads, switching."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector as ClientCollector

import gunicorn_prometheus_exporter as exporter
from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.native_values import NativeValue


def client_render(path: Path) -> bytes:
    registry = CollectorRegistry()
    ClientCollector(registry, path=str(path))
    return generate_latest(registry)


def file_values(path: Path) -> dict[str, tuple[float, float]]:
    return {
        key: (value, ts) for key, value, ts, _ in MmapedDict.read_all_values_from_file(str(path))
    }


def run_in_child(fn) -> int:
    """Runs fn in a forked child; returns the child's pid after it exited 0."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return pid


def test_metrics_get_native_values_and_prometheus_client_layout(mp_dir: Path) -> None:
    counter = Counter("jobs", "Jobs done", ["kind"], registry=None)
    counter.labels("a").inc(3)
    assert isinstance(counter.labels("a")._value, NativeValue)
    data = file_values(mp_dir / f"counter_{os.getpid()}.db")
    assert data == {mmap_key("jobs", "jobs_total", ("kind",), ("a",), "Jobs done"): (3.0, 0.0)}


def test_series_key_matches_mmap_key() -> None:
    cases = [
        ("m", "m_total", ["b", "a"], ["1", "2"], "help"),
        ("m", "m", ["l"], ['é€😀"\\\n\t\x7f\x00'], 'q"\\\nx'),
        ("m", "m", [], [], ""),
    ]
    for case in cases:
        assert _native.series_key(*case) == mmap_key(*case)


def test_mostrecent_gauge_stores_set_timestamp(mp_dir: Path) -> None:
    gauge = Gauge("temp", "t", multiprocess_mode="mostrecent", registry=None)
    gauge.set(21.5)
    [(value, ts)] = file_values(mp_dir / f"gauge_mostrecent_{os.getpid()}.db").values()
    assert value == 21.5 and ts > 0
    assert gauge._value.get_timestamp() == ts


def test_value_created_before_fork_writes_childs_own_file(mp_dir: Path) -> None:
    counter = Counter("forked", "f", registry=None)
    counter.inc(5)

    def child() -> None:
        counter.inc(2)
        assert counter._value.get() == 2

    child_pid = run_in_child(child)
    key = mmap_key("forked", "forked_total", (), (), "f")
    assert file_values(mp_dir / f"counter_{os.getpid()}.db")[key][0] == 5
    assert file_values(mp_dir / f"counter_{child_pid}.db")[key][0] == 2
    assert b"forked_total 7.0" in exporter.render_directory(str(mp_dir))


def test_fork_while_other_threads_increment(mp_dir: Path) -> None:
    """No lock is held across fork: a child forked amid increments can write."""
    counter = Counter("busy", "b", registry=None)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter.inc()

    threads = [threading.Thread(target=spin) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            run_in_child(lambda: counter.inc(100))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert b"busy_total" in exporter.render_directory(str(mp_dir))


def test_threads_lose_no_increment(mp_dir: Path) -> None:
    counter = Counter("threaded", "t", registry=None)
    histogram = Histogram("threaded_h", "h", buckets=[1, 2], registry=None)

    def work() -> None:
        for _ in range(20000):
            counter.inc()
            histogram.observe(1.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rendered = exporter.render_directory(str(mp_dir))
    assert b"threaded_total 80000.0" in rendered
    assert b'threaded_h_bucket{le="2.0"} 80000.0' in rendered
    assert rendered == client_render(mp_dir)


def test_many_series_grow_the_file_without_losing_values(mp_dir: Path) -> None:
    counter = Counter("wide", "w", ["n"], registry=None)
    for i in range(3000):
        counter.labels(str(i) * 5).inc(i)
    path = mp_dir / f"counter_{os.getpid()}.db"
    assert path.stat().st_size > 1 << 16
    data = file_values(path)
    assert len(data) == 3000
    assert data[mmap_key("wide", "wide_total", ("n",), ("0" * 5,), "w")][0] == 0
    assert data[mmap_key("wide", "wide_total", ("n",), ("2999" * 5,), "w")][0] == 2999
    assert exporter.render_directory(str(mp_dir)) == client_render(mp_dir)


def test_enable_and_disable_switch_the_value_class(tmp_path: Path) -> None:
    before = values.ValueClass
    exporter.enable_native_values(str(tmp_path))
    assert exporter.native_values_enabled()
    assert prometheus_client.values.ValueClass is NativeValue
    exporter.disable_native_values()
    assert not exporter.native_values_enabled()
    assert values.ValueClass is before
    plain = Counter("plain", "p", registry=None)
    assert not isinstance(plain._value, NativeValue)


def test_enable_rejects_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does-not-exist"):
        exporter.enable_native_values(str(tmp_path / "does-not-exist"))


def test_import_with_environment_enables_native_values(tmp_path: Path) -> None:
    """Set before importing (either order with prometheus_client), it is on."""
    import subprocess
    import sys

    for order in (
        "import prometheus_client, gunicorn_prometheus_exporter",
        "import gunicorn_prometheus_exporter, prometheus_client",
    ):
        code = (
            f"{order}\n"
            "from prometheus_client import Counter\n"
            "c = Counter('x', 'x')\n"
            "c.inc()\n"
            "print(type(c._value).__name__)\n"
        )
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout
        assert out.strip() == "NativeValue"
    assert any(p.name.startswith("counter_") for p in tmp_path.iterdir())


def test_bad_metric_input_is_a_clear_error(mp_dir: Path) -> None:
    with pytest.raises(TypeError, match="label values must be strings"):
        NativeValue("counter", "m", "m_total", ["a"], [1], "h")
    with pytest.raises(ValueError, match="multiprocess mode 'median'"):
        NativeValue("gauge", "m", "m", [], [], "h", multiprocess_mode="median")


def test_fast_methods_keep_prometheus_client_behaviour(mp_dir: Path) -> None:
    from prometheus_client import Summary

    counter = Counter("fast_c", "c", ["l"], registry=None)
    with pytest.raises(ValueError, match="missing label values"):
        counter.inc()  # a parent has no value of its own
    with pytest.raises(ValueError, match="Counters can only be incremented by non-negative"):
        counter.labels("x").inc(-1)
    counter.labels("x").inc(2, exemplar={"trace": "abc"})  # exemplars take the Python path
    counter.labels("x").inc(amount=0.5)
    counter.labels("x").inc(True)  # a bool is an int subclass: Python path, same result

    gauge = Gauge("fast_g", "g", registry=None)
    gauge.set("2.5")  # prometheus_client accepts anything float() accepts
    gauge.inc(3)
    gauge.dec()
    recent = Gauge("fast_r", "r", multiprocess_mode="mostrecent", registry=None)
    with pytest.raises(RuntimeError, match="inc must not be used with the mostrecent mode"):
        recent.inc()
    recent.set(7)
    assert recent._value.get_timestamp() > 0

    histogram = Histogram("fast_h", "h", buckets=[1, 5], registry=None)
    for amount in (0.5, 1, 3, 9, float("nan")):
        histogram.observe(amount)
    summary = Summary("fast_s", "s", registry=None)
    summary.observe(4)
    summary.observe(6)

    body = exporter.render_directory(str(mp_dir))
    assert body == client_render(mp_dir)
    for line in (
        b'fast_c_total{l="x"} 3.5',
        b'fast_g{pid="%d"} 4.5' % os.getpid(),
        b"fast_r 7.0",
        b'fast_h_bucket{le="1.0"} 2.0',
        b'fast_h_bucket{le="5.0"} 3.0',
        b'fast_h_bucket{le="+Inf"} 4.0',
        b"fast_h_count 4.0",
        b"fast_h_sum NaN",
        b"fast_s_count 2.0",
        b"fast_s_sum 10.0",
    ):
        assert line in body, line


def test_disabling_restores_prometheus_client_methods(tmp_path: Path) -> None:
    original = Counter.__dict__["inc"]
    exporter.enable_native_values(str(tmp_path))
    assert Counter.__dict__["inc"] is not original
    exporter.disable_native_values()
    assert Counter.__dict__["inc"] is original


def test_process_identifier_names_files_and_is_consulted_on_every_update(tmp_path: Path) -> None:
    """As prometheus_client's MultiProcessValue(process_identifier): files are
    {prefix}_{identifier()}.db, the function is called on every inc/set/get,
    and a change moves every value of the class to the new files at once."""
    calls = []
    current = ["a"]

    def identifier() -> str:
        calls.append(1)
        return current[0]

    exporter.enable_native_values(str(tmp_path), process_identifier=identifier)
    try:
        assert exporter.native_values_enabled()
        first = Counter("first", "f", registry=None)
        second = Gauge("second", "s", multiprocess_mode="livesum", registry=None)
        assert isinstance(first._value, NativeValue) and type(first._value) is not NativeValue
        before = len(calls)
        first.inc(2)
        second.set(1)
        assert first._value.get() == 2
        assert len(calls) == before + 3
        assert sorted(os.listdir(tmp_path)) == ["counter_a.db", "gauge_livesum_a.db"]

        current[0] = "b"
        assert first._value.get() == 0  # get() notices the change: the new file's entry
        key_first = mmap_key("first", "first_total", (), (), "f")
        key_second = mmap_key("second", "second", (), (), "s")
        # Both values have their entries in the new files already, zeroed.
        assert file_values(tmp_path / "counter_b.db") == {key_first: (0.0, 0.0)}
        assert file_values(tmp_path / "gauge_livesum_b.db") == {key_second: (0.0, 0.0)}
        first.inc(1)
        second.set(5)
        assert file_values(tmp_path / "counter_a.db") == {key_first: (2.0, 0.0)}
        assert file_values(tmp_path / "counter_b.db") == {key_first: (1.0, 0.0)}
        assert file_values(tmp_path / "gauge_livesum_b.db") == {key_second: (5.0, 0.0)}

        current[0] = "a"
        first.inc(1)  # back to the first file, which kept its value
        assert file_values(tmp_path / "counter_a.db") == {key_first: (3.0, 0.0)}
        assert b"first_total 4.0" in client_render(tmp_path)
    finally:
        exporter.disable_native_values()


def test_value_classes_with_different_identifiers_coexist(tmp_path: Path) -> None:
    """prometheus_client's own test: two classes in one process, two files."""
    exporter.enable_native_values(str(tmp_path))
    try:
        assert values.MultiProcessValue is exporter.native_values.MultiProcessValue
        assert values.MultiProcessValue() is NativeValue  # os.getpid: the native fast path
        values.ValueClass = values.MultiProcessValue(lambda: 123)
        c1 = Counter("c", "help", registry=None)
        values.ValueClass = values.MultiProcessValue(lambda: 456)
        c2 = Counter("c", "help", registry=None)
        values.ValueClass = NativeValue
        c3 = Counter("c", "help", registry=None)
        c1.inc(1)
        c2.inc(2)
        c3.inc(4)
        key = mmap_key("c", "c_total", (), (), "help")
        assert file_values(tmp_path / "counter_123.db") == {key: (1.0, 0.0)}
        assert file_values(tmp_path / "counter_456.db") == {key: (2.0, 0.0)}
        assert file_values(tmp_path / f"counter_{os.getpid()}.db") == {key: (4.0, 0.0)}
        assert b"c_total 7.0" in client_render(tmp_path)
    finally:
        exporter.disable_native_values()
    assert values.MultiProcessValue is exporter.native_values._client_multi_process_value
    assert values.ValueClass is not NativeValue


def test_get_value_class_gives_native_values_while_enabled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exporter.enable_native_values()
    try:
        assert values.get_value_class() is NativeValue
    finally:
        exporter.disable_native_values()
    assert values.get_value_class() is not NativeValue


def test_close_all_multiprocess_files_closes_ours(tmp_path: Path) -> None:
    """After values.close_all_multiprocess_files() (and the files removed, as
    prometheus_client's tests do before mark_process_dead), values used again
    write fresh files instead of the removed ones."""
    exporter.enable_native_values(str(tmp_path))
    try:
        by_pid = Counter("p", "p", registry=None)
        values.ValueClass = values.MultiProcessValue(lambda: "named")
        named = Counter("n", "n", registry=None)
        by_pid.inc(1)
        named.inc(1)
        for path in tmp_path.iterdir():
            path.unlink()
        values.close_all_multiprocess_files()
        by_pid.inc(2)
        named.inc(3)
        assert list(file_values(tmp_path / f"counter_{os.getpid()}.db").values()) == [(2.0, 0.0)]
        assert list(file_values(tmp_path / "counter_named.db").values()) == [(3.0, 0.0)]
    finally:
        exporter.disable_native_values()


def test_lowercase_directory_variable_is_copied_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    """As prometheus_client: the value constructor and MultiProcessCollector()
    copy prometheus_multiproc_dir to PROMETHEUS_MULTIPROC_DIR and warn."""
    import warnings

    exporter.enable_native_values(str(tmp_path))
    try:
        for make in (
            lambda: Counter("old", "o", registry=None),
            lambda: values.MultiProcessValue(lambda: 1)("counter", "x", "x_total", [], [], "h"),
            lambda: exporter.MultiProcessCollector(None),
        ):
            monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
            monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                make()
                make()  # copied: no second warning
            assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
            assert [w.category for w in caught] == [DeprecationWarning]
            assert "PROMETHEUS_MULTIPROC_DIR" in str(caught[0].message)
        # With a path, the collector leaves the environment alone (as theirs).
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exporter.MultiProcessCollector(None, path=str(tmp_path))
        assert caught == [] and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    finally:
        exporter.disable_native_values()
