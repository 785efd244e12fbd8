"""Shared helpers of the Redis test files (``test_redis_*.py``); their
fixtures (``redis_srv``: one plain redis-server per test module, every
database flushed before each test; ``rclient``: our ``RedisClient`` on it)
are in conftest.py.

* ``in_child(fn, *args, env=...)``: runs ``fn`` in a forked child with the
  given environment variables and returns its (pickled) result, or fails the
  test with the child's traceback. Scenarios that call
  ``RedisStorageManager.setup()`` (process-global state: the value class,
  PROMETHEUS_MULTIPROC_DIR, fork hooks, a mirror thread) run there, so that
  the pytest process is never changed.
* ``setup_and_lead()``: a manager set up in this process that also leads
  the directory's mirror (call it before forking workers).
* ``series_keys(keys, prefix)``: the series keys among `keys` (without the
  implementation's bookkeeping keys such as a version counter).
* ``samples_of(body)``, ``families_of(body)``, ``normalise_pids(text)``:
  parsing expositions.
* ``manager_env(server, **extra)``, ``wait_until(predicate)``.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redis_server import RedisServer

# Every REDIS_* / PROMETHEUS_* variable the package reads: cleared in forked
# children before a scenario's own environment is applied (and by the
# clean_env fixtures of the test files).
_OUR_VARIABLES = (
    "REDIS_ENABLED",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_KEY_PREFIX",
    "REDIS_TTL_SECONDS",
    "REDIS_PASSWORD",
    "REDIS_SSL",
    "REDIS_USERNAME",
    "REDIS_SSL_CA_CERTS",
    "REDIS_SSL_CA_PATH",
    "REDIS_SSL_CERTFILE",
    "REDIS_SSL_KEYFILE",
    "REDIS_SSL_CERT_REQS",
    "REDIS_UNIX_SOCKET",
    "REDIS_INSTANCE_ID",
    "REDIS_FLUSH_INTERVAL",
    "REDIS_TTL_DISABLED",
    "REDIS_SOCKET_TIMEOUT",
    "REDIS_CONNECT_TIMEOUT",
    "REDIS_MAX_REPLY_BYTES",
    "PROMETHEUS_REDIS_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "prometheus_multiproc_dir",
)


def manager_env(server: RedisServer, **extra: Any) -> dict[str, str]:
    """REDIS_* variables for a manager on `server`, plus `extra`."""
    env = server.env()
    env.update({k: str(v) for k, v in extra.items()})
    return env


def in_child(
    fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Any:
    """Run ``fn(*args)`` in a forked child and return its result.

    The child starts from a clean slate of our environment variables, then
    applies `env`; it leaves with ``os._exit`` (no atexit handlers, no pytest
    teardown in the child). An exception in the child fails the test with the
    child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_end)
            for name in _OUR_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(env or {})
            try:
                payload = ("ok", fn(*args))
            except BaseException:  # noqa: BLE001 - reported to the parent
                payload = ("error", traceback.format_exc())
            try:
                data = pickle.dumps(payload)
            except Exception:  # noqa: BLE001
                data = pickle.dumps(("error", "result not picklable:\n" + traceback.format_exc()))
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"child did not finish within {timeout} s")
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        if os.WIFSIGNALED(status):
            pytest.fail(f"child killed by signal {os.WTERMSIG(status)} without a result")
        pytest.fail(
            f"child died without a result (exit status {os.waitstatus_to_exitcode(status)})"
        )
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        pytest.fail("in the child process:\n" + value, pytrace=False)
    return value


def setup_and_lead(**kwargs: Any):
    """A RedisStorageManager set up in this process, which also leads the
    mirror (setup() starts the mirror thread, which takes the directory's
    lock a moment later: a worker forked in between could take it first;
    a pass_now() here takes it at once)."""
    from gunicorn_prometheus_exporter.backend import RedisStorageManager

    manager = RedisStorageManager(**kwargs)
    assert manager.setup() is True
    assert manager._mirror.pass_now() is True, "another process leads the mirror"
    return manager


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something true; that value, or a
    failed test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def series_keys(keys, prefix: str = "gunicorn") -> list[str]:
    """The keys of series ({prefix}:{store}:{process}:{metric|meta}:{hash}),
    sorted, as str; bookkeeping keys of the implementation ({prefix}:{name},
    e.g. a version counter) are left out."""
    out = []
    for key in keys:
        key = key.decode() if isinstance(key, bytes) else key
        if key.startswith(prefix + ":") and ":" in key[len(prefix) + 1 :]:
            out.append(key)
    return sorted(out)


_PID_LABEL = re.compile(r'pid="([^"@]*)@[^"]*"')


def normalise_pids(body: str) -> str:
    """pid="1234@host" -> pid="1234" (the Redis view names the instance)."""
    return _PID_LABEL.sub(r'pid="\1"', body)


def families_of(body: bytes | str) -> dict[str, tuple[str, str, list[tuple]]]:
    """Exposition -> {family name: (type, help, sorted samples)}."""
    text = body.decode() if isinstance(body, bytes) else body
    out = {}
    for family in text_string_to_metric_families(text):
        samples = sorted(
            (s.name, tuple(sorted(s.labels.items())), repr(s.value)) for s in family.samples
        )
        out[family.name] = (family.type, family.documentation, samples)
    return out


def samples_of(body: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition -> {(sample name, sorted labels): value}."""
    text = body.decode() if isinstance(body, bytes) else body
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out
