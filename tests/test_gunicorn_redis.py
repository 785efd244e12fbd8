"""End to end with a real redis-server: the Redis password stays out of the
processes' environments, command lines and logs; two Gunicorn instances
mirror to one Redis and a sidecar agent serves the combined view."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gunicorn_runner import Agent, Gunicorn, alive, redis_command, value, wait_for
from redis_server import RedisServer

SECRET = "s3cret"


@pytest.fixture
def redis_with_password():
    server = RedisServer(password=SECRET)
    try:
        yield server
    finally:
        server.close()


def redis_env(server, instance: str, directory: Path | None = None) -> dict[str, str]:
    env = dict(server.env())
    env.update({"REDIS_INSTANCE_ID": instance, "REDIS_FLUSH_INTERVAL": "0.2"})
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return env


def start(tmp_path: Path, env: dict[str, str], **kw) -> Gunicorn:
    g = Gunicorn(tmp_path, env=env, wait_ready=False, **kw)
    try:
        g.wait_serving()
    except BaseException:
        g.stop()
        raise
    return g


def keys(server, pattern: str) -> list[str]:
    return redis_command(server.port, "KEYS", pattern, password=server.password)


def proc_bytes(pid: int, what: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:
        return None


def password_env(server, form: str) -> dict[str, str]:
    """The server's settings with the password as REDIS_PASSWORD, or inside
    PROMETHEUS_REDIS_URL (user:password@ or ?password=, forms the README documents)."""
    env = redis_env(server, "hostA")
    if form == "url":
        env.pop("REDIS_PASSWORD")
        env["PROMETHEUS_REDIS_URL"] = f"redis://:{server.password}@127.0.0.1:{server.port}/0"
    elif form == "url-query":
        env.pop("REDIS_PASSWORD")
        env["PROMETHEUS_REDIS_URL"] = (
            f"redis://127.0.0.1:{server.port}/0?password={server.password}"
        )
    return env


@pytest.mark.parametrize("form", ["variable", "url", "url-query"])
def test_redis_password_is_not_leaked(tmp_path: Path, redis_with_password, form: str) -> None:
    env = password_env(redis_with_password, form)
    with start(tmp_path, env, extra_args=["--log-level", "debug"]) as g:
        # the agent: read its environment and command line while it is alive
        seen_agents: dict[int, tuple[bytes, bytes]] = {}

        def agent_seen() -> bool:
            for pid in g.agent_pids():
                environ, cmd = proc_bytes(pid, "environ"), proc_bytes(pid, "cmdline")
                if environ is not None and cmd and alive(pid):
                    seen_agents[pid] = (environ, cmd)
            return bool(seen_agents)

        wait_for(agent_seen, 10, message=lambda: f"the agent:\n{g.log()}")

        for _ in range(3):
            assert g.status("/") == 200
        # the password did reach the agent (through its stdin): it mirrored to the protected Redis
        wait_for(
            lambda: keys(redis_with_password, "*hostA*"),
            10,
            message=lambda: f"keys of hostA in Redis:\n{g.log()}",
        )

        workers = wait_for(
            lambda: g.worker_pids() if len(g.worker_pids()) == 2 else None, 10, message="2 workers"
        )
        for pid, (environ, cmd) in seen_agents.items():
            assert SECRET.encode() not in cmd, f"agent {pid} command line: {cmd!r}"
            assert SECRET.encode() not in environ, (
                f"agent {pid} has the password in /proc/{pid}/environ"
            )
        leaks = []
        for pid in [g.pid, *workers]:
            cmd = proc_bytes(pid, "cmdline") or b""
            environ = proc_bytes(pid, "environ") or b""
            if SECRET.encode() in cmd:
                leaks.append(f"worker {pid}: /proc/{pid}/cmdline")
            if SECRET.encode() in environ:
                leaks.append(
                    f"worker {pid}: /proc/{pid}/environ has "
                    + ", ".join(v.decode() for v in environ.split(b"\0") if SECRET.encode() in v)
                )
        # the application sees no password either
        assert leaks == []
        assert SECRET not in g.scrape()
    assert SECRET not in g.log(), "the password is in Gunicorn's log"


def test_redis_password_is_not_in_the_workers_os_environ(
    tmp_path: Path, redis_with_password
) -> None:
    """What the application can read: os.environ in the worker."""
    app = tmp_path / "envapp.py"
    app.write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = repr(sorted(k for k in os.environ if k.startswith('REDIS_'))).encode()\n"
        "    body += b' ' + os.environ.get('REDIS_PASSWORD', '').encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body]\n"
    )
    env = redis_env(redis_with_password, "hostA")
    with start(tmp_path, env, app="envapp:app", chdir=tmp_path) as g:
        status, _, body = g.get("/")
        assert status == 200
        assert b"REDIS_PASSWORD" not in body
        assert SECRET.encode() not in body


def test_mirror_agent_stays_up(tmp_path: Path, redis) -> None:
    """In Redis mode the agent mirrors every flush interval without dying,
    while new series keep appearing (every method, every status class)."""
    with start(tmp_path, redis_env(redis, "hostA")) as g:
        first = wait_for(lambda: g.agent_pids(), 5, message="an agent")
        sent = 0
        for wave, method in enumerate(
            ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND")
        ):
            for path in ("/", "/missing", "/fail", "/boom"):
                g.status(path, method=method)
                sent += 1
            time.sleep(0.25)  # more than a flush interval: each wave is mirrored on its own
            assert g.agent_pids() == first, f"the agent was restarted (wave {wave}):\n{g.log()}"
        assert keys(redis, "*hostA*")
        try:
            samples = g.samples()
        except OSError as e:
            raise AssertionError(f"/metrics failed ({e!r}); the agent died:\n{g.log()}") from None
        assert value(samples, "gunicorn_worker_requests_total") == sent
        assert g.agent_pids() == first, f"the agent was restarted:\n{g.log()}"
        assert "metrics agent exited" not in g.log(), g.log()


def test_two_instances_and_a_sidecar(tmp_path: Path, redis) -> None:
    n_a, m_b = 7, 5
    # run by hand, as in the README: the REDIS_* variables, --source redis
    sidecar = Agent(
        tmp_path,
        ["--source", "redis"],
        name="sidecar",
        env={k: v for k, v in redis.env().items() if k != "REDIS_ENABLED"},
    )
    a = b = None
    try:
        a = start(tmp_path, redis_env(redis, "hostA", tmp_path / "a"), name="hostA")
        b = start(tmp_path, redis_env(redis, "hostB", tmp_path / "b"), name="hostB")
        for i in range(n_a):
            assert a.status("/missing" if i < 2 else "/") == (404 if i < 2 else 200)
        for _ in range(m_b):
            assert b.status("/") == 200
        last: list = [[]]

        def combined() -> bool:
            last[0] = sidecar.samples()
            return value(last[0], "gunicorn_worker_requests_total") == n_a + m_b

        wait_for(
            combined,
            10,
            message=lambda: (
                f"{n_a + m_b} requests on the sidecar; it shows "
                f"{value(last[0], 'gunicorn_worker_requests_total')}\n--- sidecar:\n{sidecar.log()[-1500:]}"
                f"\n--- A:\n{a.log()[-1500:]}\n--- B:\n{b.log()[-1500:]}"
            ),
        )
        samples = last[0]
        assert (
            value(samples, "gunicorn_worker_requests_total", method="GET", status="2xx")
            == n_a + m_b - 2
        )
        assert value(samples, "gunicorn_worker_requests_total", method="GET", status="4xx") == 2
        assert value(samples, "gunicorn_worker_request_duration_seconds_count") == n_a + m_b
        # every worker of both instances has its gauges in the combined view
        # (the combined view labels them {pid}@{instance}, as the README says)
        workers = {f"{p}@hostA" for p in a.worker_pids()} | {f"{p}@hostB" for p in b.worker_pids()}
        wait_for(
            lambda: (
                workers
                <= {
                    ls.get("pid")
                    for n, ls, _ in sidecar.samples()
                    if n == "gunicorn_worker_memory_bytes"
                }
            ),
            5,
            message=lambda: f"the gauges of {sorted(workers)} on the sidecar",
        )

        # both instances' keys exist, apart
        assert keys(redis, "*hostA*")
        assert keys(redis, "*hostB*")
        # and each instance's own endpoint shows only its own requests
        assert value(a.samples(), "gunicorn_worker_requests_total") == n_a
        assert value(b.samples(), "gunicorn_worker_requests_total") == m_b
        # nothing crashed on the way
        for g in (a, b):
            assert "metrics agent exited" not in g.log(), g.log()
        assert sidecar.proc.poll() is None, sidecar.log()
    finally:
        for g in (a, b):
            if g is not None:
                g.stop()
        sidecar.stop()
