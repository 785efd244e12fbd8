"""RedisStorageManager and the global functions.

* setup() returns False, logs why and changes nothing when Redis is
  unreachable, refuses the password, is disabled, or the multiprocess
  directory is wrong; file storage keeps working afterwards.
* setup() installs native values and a mirror; teardown() restores the value
  class (and a custom one from value_class_factory), removes the private
  tmpfs directory it created and the variable pointing at it.
* get_client / get_collector / is_enabled, the factories, idempotent setup.
* The global functions on the singleton.
* One mirror leader per directory; a forked worker stands by and takes over
  when the leader goes; cleanup_keys() archives exited workers.

Scenarios that call setup() successfully run in forked children
(redis_support.in_child); the failing setups change no global state and
run here, with caplog.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from prometheus_client import values as pc_values

from gunicorn_prometheus_exporter.backend import (
    RedisClient,
    RedisMultiProcessCollector,
    RedisStorageManager,
    RedisValue,
)
from gunicorn_prometheus_exporter.backend.service import manager as manager_module
from gunicorn_prometheus_exporter.native_values import NativeValue
from redis_server import RedisServer, free_port
from redis_support import (
    in_child,
    manager_env,
    samples_of,
    series_keys,
    setup_and_lead,
)

# These tests are of the 0.2.x series layout's keys (REDIS_LAYOUT=series);
# tests/test_redis_fleet.py tests the instance layout.
pytestmark = pytest.mark.usefixtures("series_layout")

LOGGER = "gunicorn_prometheus_exporter"


@pytest.fixture(autouse=True)
def clean_env(no_exporter_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return no_exporter_env


def _state() -> tuple:
    from prometheus_client import metrics

    return (
        pc_values.ValueClass,
        os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        metrics.Counter.__dict__["inc"],
        metrics.Gauge.__dict__["set"],
        _shm_dirs(os.getpid()),
    )


def _shm_dirs(pid: int) -> list[str]:
    try:
        return [n for n in os.listdir("/dev/shm") if n.startswith(f"gunicorn-prometheus-{pid}-")]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------
# set-up failures (in this process: nothing global may change)
# --------------------------------------------------------------------------


def _assert_not_set_up(manager: RedisStorageManager) -> None:
    assert manager.is_enabled() is False
    assert manager.get_client() is None
    assert manager.get_collector() is None


def test_setup_false_when_redis_unreachable(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    clean_env.setenv("REDIS_ENABLED", "true")
    clean_env.setenv("REDIS_HOST", "127.0.0.1")
    clean_env.setenv("REDIS_PORT", str(port))
    before = _state()
    manager = RedisStorageManager()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    start = time.monotonic()
    assert manager.setup() is False
    assert time.monotonic() - start < 2
    assert _state() == before
    assert _shm_dirs(os.getpid()) == []
    _assert_not_set_up(manager)
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Failed to setup Redis metrics" in errors[0].getMessage()
    assert f"127.0.0.1:{port}" in errors[0].getMessage()


def test_setup_false_when_disabled(
    clean_env: pytest.MonkeyPatch, redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for name, value in redis_srv.env().items():
        clean_env.setenv(name, value)
    for enabled in ("false", "0", None):
        if enabled is None:
            clean_env.delenv("REDIS_ENABLED")
        else:
            clean_env.setenv("REDIS_ENABLED", enabled)
        before = _state()
        manager = RedisStorageManager()
        assert manager.setup() is False
        assert _state() == before
        _assert_not_set_up(manager)
    assert any("not enabled" in r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_setup_false_on_wrong_password(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(password="right") as server:
        for name, value in server.env().items():
            clean_env.setenv(name, value)
        clean_env.setenv("REDIS_PASSWORD", "wrong")
        manager = RedisStorageManager()
        assert manager.setup() is False
        _assert_not_set_up(manager)
    (error,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert "WRONGPASS" in error.getMessage() and "wrong" not in error.getMessage().replace(
        "WRONGPASS", ""
    )


def test_setup_false_when_directory_missing(
    clean_env: pytest.MonkeyPatch,
    redis_srv: RedisServer,
    tmp_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in redis_srv.env().items():
        clean_env.setenv(name, value)
    missing = tmp_path / "missing"
    clean_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    before = _state()
    manager = RedisStorageManager()
    assert manager.setup() is False
    assert _state() == before
    _assert_not_set_up(manager)
    (error,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert "PROMETHEUS_MULTIPROC_DIR" in error.getMessage()


def test_setup_false_on_invalid_setting(
    clean_env: pytest.MonkeyPatch, redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in redis_srv.env().items():
        clean_env.setenv(name, value)
    clean_env.setenv("REDIS_FLUSH_INTERVAL", "never")
    before = _state()
    manager = RedisStorageManager()
    assert manager.setup() is False
    _assert_not_set_up(manager)
    assert _state() == before
    (error,) = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert "REDIS_FLUSH_INTERVAL" in error.getMessage()


def test_factory_failure_is_caught(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("REDIS_ENABLED", "true")

    def factory():
        raise RuntimeError("no client today")

    manager = RedisStorageManager(redis_client_factory=factory)
    assert manager.setup() is False
    _assert_not_set_up(manager)
    assert any("no client today" in r.getMessage() for r in caplog.records)


def _file_storage_after_failed_setup(directory: str) -> dict:
    from prometheus_client import Counter

    import gunicorn_prometheus_exporter as gpe

    gpe.enable_native_values()  # as importing the package with the variable set does
    manager = RedisStorageManager()
    ok = manager.setup()
    counter = Counter("jobs", "Jobs.", registry=None)
    counter.inc(41)
    counter.inc()
    return {
        "ok": ok,
        "value_class": pc_values.ValueClass.__name__,
        "render": gpe.render_directory(directory),
        "files": sorted(os.listdir(directory)),
    }


def test_file_storage_keeps_working_after_failed_setup(tmp_path) -> None:
    env = {
        "REDIS_ENABLED": "true",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    result = in_child(_file_storage_after_failed_setup, str(tmp_path), env=env)
    assert result["ok"] is False
    assert result["value_class"] == "NativeValue"
    assert (
        result["render"] == b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 42.0\n"
    )
    assert any(f.startswith("counter_") for f in result["files"])


def _plain_values_after_failed_setup() -> dict:
    from prometheus_client import Counter

    manager = RedisStorageManager()
    ok = manager.setup()
    counter = Counter("jobs", "Jobs.", registry=None)
    counter.inc(3)
    return {
        "ok": ok,
        "value_class": pc_values.ValueClass.__name__,
        "value": counter._value.get(),
        "env": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        "shm": _shm_dirs(os.getpid()),
    }


def test_no_directory_and_no_value_change_after_failed_setup() -> None:
    env = {"REDIS_ENABLED": "true", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(free_port())}
    result = in_child(_plain_values_after_failed_setup, env=env)
    assert result == {
        "ok": False,
        "value_class": "MutexValue",
        "value": 3.0,
        "env": None,
        "shm": [],
    }


# --------------------------------------------------------------------------
# a working set-up (in children)
# --------------------------------------------------------------------------


def _lifecycle() -> dict:
    from prometheus_client import Counter, metrics

    out: dict = {"before": pc_values.ValueClass.__name__, "inc_before": metrics.Counter.inc}
    manager = RedisStorageManager()
    out["setup"] = manager.setup()
    out["setup_again"] = manager.setup()
    mirror = manager._mirror
    out["same_mirror"] = manager._mirror is mirror
    out["enabled"] = manager.is_enabled()
    out["during"] = pc_values.ValueClass.__name__
    out["redis_value_is_native"] = RedisValue is NativeValue and pc_values.ValueClass is RedisValue
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    out["directory"] = directory
    out["directory_on_shm"] = bool(directory) and directory.startswith(
        "/dev/shm/gunicorn-prometheus-"
    )
    client = manager.get_client()
    out["client_type"] = type(client).__name__
    out["client_ping"] = client.ping()
    collector = manager.get_collector()
    out["collector_type"] = type(collector).__name__
    Counter("jobs", "Jobs.", ["kind"], registry=None).labels("a").inc(5)
    out["pass"] = manager._mirror.pass_now()  # leads: no other process shares the directory
    out["leader"] = manager._mirror.is_leader()
    out["render"] = collector.render()
    out["files"] = sorted(os.listdir(directory))
    manager.teardown()
    out["after"] = pc_values.ValueClass.__name__
    out["inc_restored"] = metrics.Counter.inc is out.pop("inc_before")
    out["enabled_after"] = manager.is_enabled()
    out["client_after"] = manager.get_client()
    out["collector_after"] = manager.get_collector()
    out["directory_exists_after"] = os.path.exists(directory)
    out["env_after"] = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # a metric created now is an ordinary one again
    c = Counter("later", "L.", registry=None)
    c.inc()
    out["later_value_class"] = type(c._value).__name__
    return out


def test_setup_and_teardown_lifecycle(redis_srv: RedisServer, rclient: RedisClient) -> None:
    result = in_child(_lifecycle, env=manager_env(redis_srv, REDIS_INSTANCE_ID="hostA"))
    assert result["before"] == "MutexValue"
    assert result["setup"] is True and result["setup_again"] is True and result["same_mirror"]
    assert result["enabled"] is True
    assert result["during"] == "NativeValue"
    assert result["redis_value_is_native"] is True
    assert result["directory_on_shm"] is True
    assert result["client_type"] == "RedisClient" and result["client_ping"] is True
    assert result["collector_type"] == "RedisMultiProcessCollector"
    assert result["leader"] is True and result["pass"] is True
    assert samples_of(result["render"]) == {("jobs_total", (("kind", "a"),)): 5.0}
    assert [f for f in result["files"] if f.endswith(".db")] == [f"counter_{_pid_in(result)}.db"]
    # teardown restores everything
    assert result["after"] == "MutexValue"
    assert result["inc_restored"] is True
    assert result["enabled_after"] is False
    assert result["client_after"] is None and result["collector_after"] is None
    assert result["directory_exists_after"] is False
    assert result["env_after"] is None
    assert result["later_value_class"] == "MutexValue"
    # what was sent stays in Redis for other readers
    body = RedisMultiProcessCollector(None, rclient).render()
    assert samples_of(body) == {("jobs_total", (("kind", "a"),)): 5.0}


def _pid_in(result: dict) -> str:
    (name,) = [f for f in result["files"] if f.endswith(".db")]
    return name[len("counter_") : -3]


class MarkerValue(NativeValue):
    """A value class made by value_class_factory."""


def _custom_value_class(directory: str) -> dict:
    from prometheus_client import Gauge

    manager = RedisStorageManager(value_class_factory=lambda: MarkerValue)
    ok = manager.setup()
    during = pc_values.ValueClass
    g = Gauge("g", "G.", multiprocess_mode="max", registry=None)
    g.set(3)
    manager._mirror.pass_now()
    render = manager.get_collector().render()
    manager.teardown()
    return {
        "ok": ok,
        "during": during is MarkerValue,
        "value": type(g._value) is MarkerValue,
        "after": pc_values.ValueClass.__name__,
        "render": render,
        "dir_kept": os.path.isdir(directory),
    }


def test_value_class_factory_installed_and_restored(redis_srv: RedisServer, tmp_path) -> None:
    result = in_child(
        _custom_value_class,
        str(tmp_path),
        env=manager_env(redis_srv, PROMETHEUS_MULTIPROC_DIR=tmp_path),
    )
    assert result["ok"] is True and result["during"] is True and result["value"] is True
    assert result["after"] == "MutexValue"
    assert samples_of(result["render"]) == {("g", ()): 3.0}
    assert result["dir_kept"] is True  # not ours: PROMETHEUS_MULTIPROC_DIR was given


def _with_client_factory(port: int) -> dict:
    calls = []

    def factory():
        calls.append(1)
        return RedisClient(host="127.0.0.1", port=port)

    manager = RedisStorageManager(redis_client_factory=factory)
    ok = manager.setup()
    description = manager.get_client().native.description
    manager.teardown()
    return {"ok": ok, "calls": len(calls), "description": description}


def test_redis_client_factory_is_used(redis_srv: RedisServer) -> None:
    # REDIS_PORT points nowhere: only the factory's client can work
    env = {"REDIS_ENABLED": "true", "REDIS_PORT": str(free_port())}
    result = in_child(_with_client_factory, redis_srv.port, env=env)
    assert result == {"ok": True, "calls": 1, "description": f"127.0.0.1:{redis_srv.port}/0"}


def _global_functions() -> dict:
    from prometheus_client import Counter

    from gunicorn_prometheus_exporter import backend

    manager_module._manager = None
    out = {
        "enabled_before": backend.is_redis_enabled(),
        "client_before": backend.get_redis_client(),
        "collector_before": backend.get_redis_collector(),
    }
    out["same_singleton"] = (
        backend.get_redis_storage_manager() is backend.get_redis_storage_manager()
    )
    out["setup"] = backend.setup_redis_metrics()
    out["enabled"] = backend.is_redis_enabled()
    out["client"] = backend.get_redis_client() is backend.get_redis_storage_manager().get_client()
    Counter("jobs", "Jobs.", registry=None).inc(2)
    backend.cleanup_redis_keys()  # nothing dead; forces a pass
    out["render"] = backend.get_redis_collector().render()
    backend.teardown_redis_metrics()
    out["enabled_after"] = backend.is_redis_enabled()
    out["value_class_after"] = pc_values.ValueClass.__name__
    return out


def test_global_functions(redis_srv: RedisServer) -> None:
    result = in_child(_global_functions, env=manager_env(redis_srv, REDIS_FLUSH_INTERVAL=60))
    assert result["enabled_before"] is False
    assert result["client_before"] is None and result["collector_before"] is None
    assert result["same_singleton"] is True
    assert result["setup"] is True and result["enabled"] is True and result["client"] is True
    assert samples_of(result["render"]) == {("jobs_total", ()): 2.0}
    assert result["enabled_after"] is False
    assert result["value_class_after"] == "MutexValue"


def _teardown_sends_the_last_values(directory: str) -> dict:
    from prometheus_client import Counter

    manager = RedisStorageManager()
    assert manager.setup()
    counter = Counter("jobs", "Jobs.", registry=None)
    counter.inc(7)
    manager._mirror.pass_now()
    counter.inc(3)  # no pass after this one
    manager.teardown()
    return {}


def test_teardown_makes_a_last_pass(redis_srv: RedisServer, rclient: RedisClient, tmp_path) -> None:
    in_child(
        _teardown_sends_the_last_values,
        str(tmp_path),
        env=manager_env(redis_srv, REDIS_FLUSH_INTERVAL=60, PROMETHEUS_MULTIPROC_DIR=tmp_path),
    )
    body = RedisMultiProcessCollector(None, rclient).render()
    assert samples_of(body) == {("jobs_total", ()): 10.0}


def _mirror_thread_runs_by_itself() -> dict:
    from prometheus_client import Counter

    manager = RedisStorageManager()
    assert manager.setup()
    Counter("jobs", "Jobs.", registry=None).inc(4)
    client = manager.get_client()
    deadline = time.monotonic() + 5
    seen = None
    while time.monotonic() < deadline:
        seen = samples_of(RedisMultiProcessCollector(None, client).render())
        if seen.get(("jobs_total", ())) == 4.0:
            break
        time.sleep(0.02)
    manager.teardown()
    return {"seen": seen}


def test_mirror_thread_passes_every_flush_interval(redis_srv: RedisServer) -> None:
    result = in_child(
        _mirror_thread_runs_by_itself, env=manager_env(redis_srv, REDIS_FLUSH_INTERVAL=0.05)
    )
    assert result["seen"] == {("jobs_total", ()): 4.0}


# --------------------------------------------------------------------------
# leadership and forks
# --------------------------------------------------------------------------


def _leader_and_takeover(directory: str) -> dict:
    from prometheus_client import Counter

    out = {}
    manager = setup_and_lead()
    out["leader"] = manager._mirror.is_leader()
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        try:
            os.close(go_w)
            os.close(rep_r)
            leader = manager._mirror.is_leader()
            passed = manager._mirror.pass_now()  # the master leads: no pass here
            os.write(rep_w, f"{int(leader)}{int(passed)}".encode())
            os.read(go_r, 1)  # the master has stepped down
            Counter("worker_jobs", "W.", registry=None).inc(6)
            os.write(rep_w, b"x")
            os.read(go_r, 1)  # done
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(rep_w)
    out["worker_leader_pass"] = os.read(rep_r, 2).decode()
    # The master goes: its mirror stops and lets go of the lock.
    client = RedisClient.from_config()
    manager.teardown()
    os.write(go_w, b"g")
    os.read(rep_r, 1)
    deadline = time.monotonic() + 5
    seen = {}
    while time.monotonic() < deadline and not seen:
        seen = samples_of(RedisMultiProcessCollector(None, client).render())
        time.sleep(0.02)
    out["seen"] = seen
    os.write(go_w, b"d")
    os.waitpid(worker, 0)
    return out


def test_one_leader_and_takeover(redis_srv: RedisServer, tmp_path) -> None:
    """The process that set up leads; a forked worker stands by (its
    pass_now() does nothing) and takes over once the leader is gone."""
    result = in_child(
        _leader_and_takeover,
        str(tmp_path),
        env=manager_env(redis_srv, REDIS_FLUSH_INTERVAL=0.05, PROMETHEUS_MULTIPROC_DIR=tmp_path),
    )
    assert result["leader"] is True
    assert result["worker_leader_pass"] == "00"
    assert result["seen"] == {("worker_jobs_total", ()): 6.0}


def _cleanup_keys_archives_exited_workers(directory: str) -> dict:
    from prometheus_client import Counter, Gauge

    manager = setup_and_lead()
    client = manager.get_client()
    pids = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                Counter("jobs", "Jobs.", registry=None).inc(n + 1)
                Gauge("busy", "B.", multiprocess_mode="livesum", registry=None).inc()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        pids.append(pid)
    manager._mirror.pass_now()
    before = samples_of(manager.get_collector().render())
    keys_before = series_keys(client.keys("gunicorn:*"))
    manager.cleanup_keys()
    after = samples_of(manager.get_collector().render())
    keys_after = series_keys(client.keys("gunicorn:*"))
    files = sorted(f for f in os.listdir(directory) if f.endswith(".db"))
    manager.teardown()
    return {
        "pids": pids,
        "before": before,
        "after": after,
        "keys_before": keys_before,
        "keys_after": keys_after,
        "files": files,
    }


def test_cleanup_keys_archives_exited_workers(redis_srv: RedisServer, tmp_path) -> None:
    result = in_child(
        _cleanup_keys_archives_exited_workers,
        str(tmp_path),
        env=manager_env(
            redis_srv,
            REDIS_FLUSH_INTERVAL=60,
            PROMETHEUS_MULTIPROC_DIR=tmp_path,
            REDIS_INSTANCE_ID="h",
        ),
    )
    assert result["before"] == {("jobs_total", ()): 6.0, ("busy", ()): 3.0}
    assert result["after"] == {("jobs_total", ()): 6.0}
    assert result["files"] == ["counter_archive.db"]
    for pid in result["pids"]:
        assert any(f":{pid}@h:" in k for k in result["keys_before"])
        assert not any(f":{pid}@h:" in k for k in result["keys_after"])
    assert len(result["keys_after"]) == 2  # the archive's metric and meta keys
    assert all(k.startswith("gunicorn:counter:archive@h:") for k in result["keys_after"])


# --------------------------------------------------------------------------
# the mirror over every transport and database
# --------------------------------------------------------------------------


def _mirror_one_value() -> dict:
    from prometheus_client import Counter

    manager = setup_and_lead()
    Counter("jobs", "Jobs.", registry=None).inc(9)
    manager._mirror.pass_now()
    out = {
        "render": manager.get_collector().render(),
        "description": manager.get_client().native.description,
    }
    manager.teardown()
    return out


JOBS_9 = b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 9.0\n"


@pytest.mark.parametrize("kind", ["password", "acl", "unix", "tls"])
def test_mirror_over_every_transport(kind: str) -> None:
    options = {
        "password": {"password": "pw"},
        "acl": {"acl_user": ("app", "secret")},
        "unix": {"unix_socket": True},
        "tls": {"tls": True},
    }[kind]
    with RedisServer(**options) as server:
        result = in_child(_mirror_one_value, env=manager_env(server, REDIS_FLUSH_INTERVAL=60))
        assert result["render"] == JOBS_9
        outside = RedisClient(**server.client_kwargs())
        assert RedisMultiProcessCollector(None, outside).render() == JOBS_9
        assert len(outside.keys("gunicorn:counter:*")) == 2
        if kind == "unix":
            assert "unix:" in result["description"]
        if kind == "tls":
            assert "(TLS)" in result["description"]


def test_mirror_into_another_database(redis_srv: RedisServer, rclient: RedisClient) -> None:
    result = in_child(
        _mirror_one_value, env=manager_env(redis_srv, REDIS_DB=2, REDIS_FLUSH_INTERVAL=60)
    )
    assert result["render"] == JOBS_9
    assert rclient.keys("*") == []
    db2 = RedisClient(**redis_srv.client_kwargs(), db=2)
    assert len(db2.keys("gunicorn:counter:*")) == 2
    assert RedisMultiProcessCollector(None, db2).render() == JOBS_9


def test_mirror_configured_by_url(redis_srv: RedisServer, rclient: RedisClient) -> None:
    env = {
        "REDIS_ENABLED": "true",
        "REDIS_PORT": str(free_port()),
        "REDIS_FLUSH_INTERVAL": "60",
        "PROMETHEUS_REDIS_URL": f"redis://127.0.0.1:{redis_srv.port}/3",
        "REDIS_LAYOUT": "series",
    }
    result = in_child(_mirror_one_value, env=env)
    assert result["render"] == JOBS_9
    assert result["description"] == f"127.0.0.1:{redis_srv.port}/3"
    assert rclient.keys("*") == []
    assert len(RedisClient(**redis_srv.client_kwargs(), db=3).keys("gunicorn:counter:*")) == 2
