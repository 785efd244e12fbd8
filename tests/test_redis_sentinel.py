"""Redis Sentinel with real processes: the settings (REDIS_SENTINELS,
REDIS_SENTINEL_MASTER, redis+sentinel://) as Python and the agent read them,
clear errors when no sentinel answers or the master is unknown to them, and
a failover (SIGKILL of the master) that Gunicorn's mirror, the sidecar and
the collector follow without losing or doubling a count."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend.core.client import RedisClient
from gunicorn_prometheus_exporter.backend.core.collector import RedisMultiProcessCollector
from gunicorn_prometheus_exporter.config import ExporterConfig
from gunicorn_runner import Agent, Gunicorn, agent_binary, clean_env, redis_command, wait_for
from redis_sentinel import MASTER_NAME, SentinelCluster
from redis_server import free_port

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

REQUESTS = "gunicorn_worker_requests_total"


@pytest.fixture(scope="module")
def cluster():
    """For tests that do not fail it over."""
    with SentinelCluster() as c:
        yield c


def sentinel_env(monkeypatch, **variables: str) -> ExporterConfig:
    for name in ("PROMETHEUS_REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REDIS_SENTINEL_PASSWORD", raising=False)
    for name, text in variables.items():
        monkeypatch.setenv(name, text)
    return ExporterConfig()


# ---------------------------------------------------------------- settings --


def test_variables_give_the_client_its_sentinels(monkeypatch) -> None:
    config = sentinel_env(
        monkeypatch,
        REDIS_SENTINELS="10.0.0.1:26380, [::1],s3:5000".replace(" ", ""),
        REDIS_SENTINEL_MASTER="mymaster",
        REDIS_SENTINEL_PASSWORD="sp",
    )
    kw = config.redis_client_kwargs()
    assert kw["sentinels"] == "10.0.0.1:26380,[::1]:26379,s3:5000"  # written back tidy
    assert kw["sentinel_master"] == "mymaster"
    assert kw["sentinel_password"] == "sp"
    assert "master 'mymaster' of sentinels" in repr(RedisClient(**kw))


def test_the_url_form(monkeypatch) -> None:
    config = sentinel_env(
        monkeypatch,
        PROMETHEUS_REDIS_URL="redis+sentinel://:pw@127.0.0.1:26380,127.0.0.2/mymaster/3",
        REDIS_SENTINEL_PASSWORD="from-variable",
    )
    kw = config.redis_client_kwargs()
    assert kw["sentinels"] == "127.0.0.1:26380,127.0.0.2:26379"
    assert (kw["sentinel_master"], kw["db"], kw["password"]) == ("mymaster", 3, "pw")
    assert kw["sentinel_password"] == "from-variable"
    parsed = _native.parse_redis_url("redis+sentinel://h/m?sentinel_password=q")
    assert (parsed["sentinels"], parsed["sentinel_master"], parsed["sentinel_password"]) == (
        "h:26379",
        "m",
        "q",
    )


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        (
            {"REDIS_SENTINELS": "h1:26379,h2:port"},
            "REDIS_SENTINELS='h1:26379,h2:port' invalid port",
        ),
        ({"REDIS_SENTINELS": "h1,,h2"}, "empty sentinel address"),
        ({"PROMETHEUS_REDIS_URL": "redis+sentinel://h1:26379"}, "no master name"),
    ],
)
def test_bad_settings_name_the_cause(monkeypatch, variables, words) -> None:
    config = sentinel_env(monkeypatch, **variables)
    with pytest.raises(ValueError) as error:
        RedisClient(**config.redis_client_kwargs())
    assert words in str(error.value)


def test_sentinels_need_a_master_name_in_python_and_the_agent(monkeypatch, tmp_path) -> None:
    config = sentinel_env(monkeypatch, REDIS_SENTINELS="127.0.0.1:26379")
    with pytest.raises(ValueError, match="sentinels given without the master's name"):
        RedisClient(**config.redis_client_kwargs())
    agent = subprocess.run(
        [str(agent_binary()), "--source", "redis", "--port", str(free_port())],
        env=clean_env(REDIS_SENTINELS="127.0.0.1:26379"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert agent.returncode != 0
    assert "sentinels given without the master's name" in agent.stderr + agent.stdout


# ------------------------------------------------------------------ errors --


def test_no_sentinel_reachable_names_each_within_the_timeout() -> None:
    ports = [free_port(), free_port()]
    client = RedisClient(
        sentinels=",".join(f"127.0.0.1:{p}" for p in ports),
        sentinel_master=MASTER_NAME,
        socket_connect_timeout=1,
        socket_timeout=1,
    )
    started = time.monotonic()
    with pytest.raises(_native.RedisConnectionError) as error:
        client.ping()
    assert time.monotonic() - started < 3
    message = str(error.value)
    assert f"no Redis Sentinel reachable for master '{MASTER_NAME}'" in message
    for port in ports:
        assert f"127.0.0.1:{port}: connect: Connection refused" in message


def test_a_master_unknown_to_the_sentinels(cluster) -> None:
    client = RedisClient(sentinels=cluster.sentinel_list, sentinel_master="nosuchmaster")
    with pytest.raises(_native.RedisConnectionError) as error:
        client.ping()
    assert (
        f"master 'nosuchmaster' is unknown to Redis Sentinel "
        f"{cluster.sentinel_list.replace(',', ', ')}" in str(error.value)
    )


def test_the_master_is_found_and_the_sentinels_password_used() -> None:
    with SentinelCluster(sentinels=2, sentinel_password="sentinel-secret") as c:
        good = RedisClient(
            sentinels=c.sentinel_list,
            sentinel_master=MASTER_NAME,
            sentinel_password="sentinel-secret",
        )
        good.set("where", "master")
        assert redis_command(c.master.port, "GET", "where") == "master"
        bad = RedisClient(sentinels=c.sentinel_list, sentinel_master=MASTER_NAME)
        with pytest.raises(_native.RedisAuthenticationError, match="no Redis Sentinel reachable"):
            bad.ping()


# ---------------------------------------------------------------- failover --


def total(metrics, name: str, **labels: str) -> float:
    return sum(
        s.value
        for m in metrics
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def offset(port: int, field: str) -> int:
    """A replication offset from INFO replication."""
    info = redis_command(port, "INFO", "replication")
    return int(
        next(line for line in info.splitlines() if line.startswith(field + ":")).split(":")[1]
    )


def test_a_failover_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with SentinelCluster() as c:
        env = {
            **c.env(),
            "REDIS_INSTANCE_ID": "hostA",
            "REDIS_FLUSH_INTERVAL": "0.2",
            "REDIS_CONNECT_TIMEOUT": "1",
            "REDIS_SOCKET_TIMEOUT": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp"),
        }
        sidecar_env = {k: v for k, v in env.items() if k not in ("REDIS_ENABLED",)}
        sidecar_env.pop("PROMETHEUS_MULTIPROC_DIR")
        collector = RedisMultiProcessCollector(
            None, RedisClient(sentinels=c.sentinel_list, sentinel_master=MASTER_NAME)
        )
        with (
            Agent(tmp_path, ["--source", "redis"], env=sidecar_env, name="sidecar") as sidecar,
            Gunicorn(tmp_path, env=env, wait_ready=False) as g,
        ):
            g.wait_serving()

            for _ in range(5):
                assert g.status("/") == 200
            sidecar.wait_requests(5, 0)

            # Cut the replica off (it cannot authenticate to resync), so that
            # what the master acknowledges next is never replicated: the
            # failover loses it, as asynchronous replication may.
            replica = c.replicas[0]
            redis_command(replica.port, "CONFIG", "SET", "masterauth", "not-the-password")
            redis_command(c.master.port, "CLIENT", "KILL", "TYPE", "replica")
            for _ in range(3):
                assert g.status("/missing") == 404
            sidecar.wait_requests(5, 3)
            assert "master_link_status:down" in redis_command(replica.port, "INFO", "replication")
            # the master has writes the replica lacks (the 4xx counts)
            assert offset(replica.port, "slave_repl_offset") < offset(
                c.master.port, "master_repl_offset"
            )

            old = c.kill_master()
            new = c.wait_failover(old)
            assert new == replica.port
            for _ in range(4):
                assert g.status("/") == 200
            # The 4xx series did not change after the failover: only the
            # mirror's resend of everything restores it on the new master.
            sidecar.wait_requests(9, 3, timeout=60)
            time.sleep(1)  # passes go on: nothing counted twice
            sidecar.wait_requests(9, 3, timeout=5)

            def collected() -> bool:
                metrics = collector.collect()
                return (
                    total(metrics, REQUESTS, status="2xx") == 9
                    and total(metrics, REQUESTS, status="4xx") == 3
                )

            wait_for(collected, 30, interval=0.3, message="the collector to follow the failover")
            assert "metrics agent exited" not in g.log(), g.log()


def test_a_forced_failover_is_followed_at_once() -> None:
    """SENTINEL FAILOVER: the old master lives on as a replica (a role change
    at the same address, not a crash); the client asks the sentinels again."""
    with SentinelCluster() as c:
        client = RedisClient(
            sentinels=c.sentinel_list, sentinel_master=MASTER_NAME, socket_connect_timeout=1
        )
        client.set("before", "1")
        old = c.master_port()
        assert c.sentinels[0].command("SENTINEL", "FAILOVER", MASTER_NAME) == "OK"
        new = c.wait_failover(old)
        wait_for(lambda: redis_command(old, "ROLE")[0] == "slave", 30, interval=0.2)

        def written() -> bool:
            client.set("after", "2")  # fails (and is tried again) until the new master is found
            return True

        wait_for(written, 30, interval=0.2, message="a write to reach the new master")
        assert redis_command(new, "GET", "after") == "2"
        assert redis_command(new, "GET", "before") == "1"  # replicated before the switch


def test_a_demoted_master_is_left_and_its_role_checked(cluster) -> None:
    """The master turned replica behind the sentinels' back (REPLICAOF, no
    client killed): READONLY drops the connection, and the next connect
    refuses the address the sentinels still give, because ROLE says slave."""
    client = RedisClient(sentinels=cluster.sentinel_list, sentinel_master=MASTER_NAME)
    client.set("k", "v")
    master = cluster.master.port
    replica = cluster.replicas[0].port
    assert redis_command(master, "REPLICAOF", "127.0.0.1", str(replica)) == "OK"
    try:
        with pytest.raises(_native.RedisResponseError, match="READONLY"):
            client.set("k", "w")
        with pytest.raises(_native.RedisConnectionError) as error:
            client.ping()
        assert f"Redis at 127.0.0.1:{master}/0, which the sentinels name master" in str(error.value)
        assert "is a slave" in str(error.value)
    finally:
        redis_command(master, "REPLICAOF", "NO", "ONE")


# --------------------------------------------------------------- secrets --


def _secret_holders(g: Gunicorn, secret: bytes) -> list[str]:
    """Where the master, its workers and its agents show `secret`."""
    found = []
    for pid in [g.pid, *g.worker_pids(), *g.agent_pids()]:
        for what in ("environ", "cmdline"):
            try:
                if secret in Path(f"/proc/{pid}/{what}").read_bytes():
                    found.append(f"/proc/{pid}/{what}")
            except OSError:
                pass  # gone: nothing to show
    return found


@pytest.mark.parametrize("form", ["variable", "url"])
def test_the_sentinels_password_reaches_the_agent_only_through_its_pipe(
    tmp_path: Path, form: str
) -> None:
    secret = "sentinel-secret-7f3a"
    with SentinelCluster(sentinels=2, sentinel_password=secret) as c:
        env = {**c.env(), "REDIS_INSTANCE_ID": "hostA", "REDIS_FLUSH_INTERVAL": "0.2"}
        if form == "url":
            for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"):
                env.pop(name)
            env["PROMETHEUS_REDIS_URL"] = (
                f"redis+sentinel://{c.sentinel_list}/{MASTER_NAME}?sentinel_password={secret}"
            )
        with Gunicorn(tmp_path, env=env) as g:
            for _ in range(3):
                assert g.status("/") == 200
            # The agent found the master through the password-protected sentinels.
            wait_for(
                lambda: redis_command(c.master.port, "KEYS", "*hostA*"),
                15,
                message=lambda: f"hostA's keys in the master:\n{g.log()}",
            )
            wait_for(lambda: len(g.worker_pids()) >= 1 and g.agent_pids(), 10, message="pids")
            assert _secret_holders(g, secret.encode()) == []
        assert secret not in g.log()
