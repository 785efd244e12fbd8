"""Redis Cluster with real processes (tests/redis_cluster.py: 3 primaries, 3
replicas): the settings (REDIS_CLUSTER, REDIS_CLUSTER_NODES,
redis+cluster://) as Python and the agent read them, clear errors for what a
cluster cannot do (another database, Sentinel too, a Unix socket), commands
routed to the primary of their key, and writes that continue when a primary
is SIGKILLed and its replica promoted."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend import (
    RedisAuthenticationError,
    RedisConnectionError,
    RedisTimeoutError,
)
from gunicorn_prometheus_exporter.backend.core.client import RedisClient
from gunicorn_prometheus_exporter.config import ExporterConfig
from gunicorn_runner import Agent, Gunicorn, agent_binary, clean_env, redis_command
from redis_cluster import RedisCluster
from redis_server import free_port

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

REQUESTS = "gunicorn_worker_requests_total"
VARIABLES = (
    "PROMETHEUS_REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_UNIX_SOCKET",
    "REDIS_CLUSTER",
    "REDIS_CLUSTER_NODES",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
)


@pytest.fixture(scope="module")
def cluster():
    """For tests that do not kill a node."""
    with RedisCluster() as c:
        yield c


def cluster_env(monkeypatch, **variables: str) -> ExporterConfig:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, text in variables.items():
        monkeypatch.setenv(name, text)
    return ExporterConfig()


def agent_refuses(*args: str, **variables: str) -> str:
    """The agent's message when it refuses these settings at start."""
    agent = subprocess.run(
        [str(agent_binary()), *(args or ("--source", "redis")), "--port", str(free_port())],
        env=clean_env(**variables),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert agent.returncode != 0, agent.stdout + agent.stderr
    return agent.stdout + agent.stderr


# ---------------------------------------------------------------- settings --


def test_redis_cluster_makes_the_server_a_seed(monkeypatch) -> None:
    config = cluster_env(
        monkeypatch, REDIS_CLUSTER="true", REDIS_HOST="10.1.2.3", REDIS_PORT="7000"
    )
    kw = config.redis_client_kwargs()
    assert kw["cluster"] is True
    assert repr(RedisClient(**kw)) == "RedisClient(cluster of 10.1.2.3:7000/0)"
    off = cluster_env(monkeypatch, REDIS_HOST="10.1.2.3")
    assert repr(RedisClient(**off.redis_client_kwargs())) == "RedisClient(10.1.2.3:6379/0)"


def test_redis_cluster_nodes_imply_a_cluster(monkeypatch) -> None:
    config = cluster_env(monkeypatch, REDIS_CLUSTER_NODES="10.0.0.1:7000,[::1],node-c:7002")
    kw = config.redis_client_kwargs()
    assert kw["cluster_nodes"] == "10.0.0.1:7000,[::1]:6379,node-c:7002"  # written back tidy
    assert "cluster of 10.0.0.1:7000,[::1]:6379,node-c:7002/0" in repr(RedisClient(**kw))


def test_the_url_form(monkeypatch) -> None:
    config = cluster_env(
        monkeypatch, PROMETHEUS_REDIS_URL="rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2/0"
    )
    kw = config.redis_client_kwargs()
    assert kw["cluster_nodes"] == "10.0.0.1:7000,10.0.0.2:6379"
    assert (kw["password"], kw["ssl"], kw["db"]) == ("pw", True, 0)
    assert "cluster of 10.0.0.1:7000,10.0.0.2:6379/0 (TLS)" in repr(RedisClient(**kw))
    # REDIS_CLUSTER with a plain URL: its server is the seed.
    seeded = cluster_env(monkeypatch, PROMETHEUS_REDIS_URL="redis://h:7005", REDIS_CLUSTER="1")
    assert "cluster of h:7005/0" in repr(RedisClient(**seeded.redis_client_kwargs()))
    assert "cluster_nodes" not in _native.parse_redis_url("redis://h:7005")


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"REDIS_CLUSTER": "true", "REDIS_DB": "2"}, "Redis Cluster has only database 0"),
        ({"PROMETHEUS_REDIS_URL": "redis+cluster://h1,h2/3"}, "Redis Cluster has only database 0"),
        ({"REDIS_CLUSTER_NODES": "h1,,h2"}, "empty cluster node address"),
        ({"REDIS_CLUSTER_NODES": "h1:x"}, "REDIS_CLUSTER_NODES='h1:x' invalid port"),
        (
            {"REDIS_CLUSTER": "true", "REDIS_SENTINELS": "s:26379", "REDIS_SENTINEL_MASTER": "m"},
            "Redis Cluster and Redis Sentinel cannot be used together",
        ),
        (
            {"REDIS_CLUSTER": "true", "REDIS_UNIX_SOCKET": "/run/redis.sock"},
            "a Unix socket cannot be a cluster node",
        ),
    ],
)
def test_bad_settings_name_the_cause_in_python_and_the_agent(monkeypatch, variables, words) -> None:
    with pytest.raises(ValueError) as error:
        RedisClient(**cluster_env(monkeypatch, **variables).redis_client_kwargs())
    assert words in str(error.value)
    assert words in agent_refuses(**variables)


def test_the_series_layout_is_not_mirrored_to_a_cluster(tmp_path: Path) -> None:
    message = agent_refuses(
        "--directory",
        str(tmp_path),
        REDIS_ENABLED="true",
        REDIS_CLUSTER="true",
        REDIS_LAYOUT="series",
    )
    assert "REDIS_LAYOUT=series cannot be mirrored to a Redis Cluster" in message


# ---------------------------------------------------------- a real cluster --


def test_commands_go_to_the_primary_of_their_key(cluster, monkeypatch) -> None:
    config = cluster_env(monkeypatch, REDIS_CLUSTER_NODES=f"127.0.0.1:{cluster.nodes[-1].port}")
    client = RedisClient(**config.redis_client_kwargs())
    keys = [f"py:{i}" for i in range(200)]
    assert client.pipeline_execute([("SET", k, k) for k in keys]) == ["OK"] * len(keys)
    assert client.pipeline_execute([("GET", k) for k in keys]) == [k.encode() for k in keys]
    owners = {cluster.owner(k) for k in keys}
    assert owners == cluster.primary_ports()  # every primary holds some
    for k in keys[:20]:
        assert redis_command(cluster.owner(k), "GET", k) == k  # no redirection there
    assert client.get("py:7") == b"py:7"
    assert client.ping()


def test_a_transaction_over_two_slots_names_the_keys(cluster) -> None:
    client = RedisClient(cluster_nodes=cluster.seeds)
    with pytest.raises(Exception, match=r"keys '\{a\}x' \(slot \d+\) and '\{b\}y'"):
        client.pipeline_execute([("MULTI",), ("SET", "{a}x", "1"), ("SET", "{b}y", "2"), ("EXEC",)])
    replies = client.pipeline_execute(
        [("MULTI",), ("HSET", "{inst}a", "f", "1"), ("HSET", "{inst}b", "f", "2"), ("EXEC",)]
    )
    assert replies[-1] == [1, 1]


def test_writes_continue_when_a_primary_is_killed() -> None:
    with RedisCluster() as cluster:
        client = RedisClient(cluster_nodes=cluster.seeds, socket_timeout=5)
        keys = ["{victim}total", *(f"failover:{i}" for i in range(30))]
        for round_ in range(5):
            client.pipeline_execute([("SET", k, str(round_)) for k in keys])
        epoch = client.native.connection_epoch
        killed = cluster.kill_primary("victim")
        failures = 0
        start = time.monotonic()
        for round_ in range(5, 25):
            try:
                client.pipeline_execute([("SET", k, str(round_)) for k in keys])
            except Exception:  # a failover longer than one call's socket timeout
                failures += 1
                assert time.monotonic() - start < 30
                time.sleep(0.2)
        assert failures <= 3
        assert client.pipeline_execute([("GET", k) for k in keys]) == [b"24"] * len(keys)
        assert client.native.connection_epoch > epoch
        cluster.wait_failover()
        assert cluster.owner("victim") != killed
        assert redis_command(cluster.owner("victim"), "GET", "{victim}total") == "24"


def test_a_tls_cluster_with_a_password_is_reached_at_its_tls_ports() -> None:
    with RedisCluster(tls=True, password="cluster pw") as cluster:
        client = RedisClient(
            password="cluster pw",
            cluster_nodes=cluster.seeds,
            ssl=True,
            ssl_ca_certs=cluster.tls["ca.crt"],
        )
        keys = [f"tls:{i}" for i in range(60)]
        assert client.pipeline_execute([("SET", k, k) for k in keys]) == ["OK"] * len(keys)
        assert {cluster.owner(k) for k in keys} == cluster.primary_ports()
        assert client.pipeline_execute([("GET", k) for k in keys]) == [k.encode() for k in keys]
        plain = RedisClient(cluster_nodes=cluster.seeds, password="cluster pw", socket_timeout=0.5)
        with pytest.raises(
            (RedisConnectionError, RedisTimeoutError),
            match="no Redis Cluster node gave the slot map",
        ):
            plain.ping()
        wrong = RedisClient(
            cluster_nodes=cluster.seeds,
            password="wrong",
            ssl=True,
            ssl_ca_certs=cluster.tls["ca.crt"],
        )
        with pytest.raises(RedisAuthenticationError, match="authentication failed"):
            wrong.ping()


# ------------------------------------------------------------- end to end --


def replica_of(cluster: RedisCluster, primary: int) -> int:
    """The port of the replica of the primary at ``primary``."""
    info = redis_command(primary, "INFO", "replication")
    line = next(x for x in info.splitlines() if x.startswith("slave0:"))
    return int(dict(f.split("=") for f in line.split(":", 1)[1].split(","))["port"])


def test_two_instances_and_a_sidecar_count_exactly_across_a_failover(tmp_path: Path) -> None:
    """Two Gunicorn instances mirror into the cluster, a sidecar serves the
    fleet; the primary holding one instance's node is SIGKILLed after its
    replica was cut off, so that writes it acknowledged are really lost: the
    mirror's resend on the new primary restores them, nothing is doubled."""
    with RedisCluster() as c:
        common = {
            **c.env(),
            "REDIS_FLUSH_INTERVAL": "0.2",
            "REDIS_CONNECT_TIMEOUT": "1",
            "REDIS_SOCKET_TIMEOUT": "3",
        }
        sidecar_env = {k: v for k, v in common.items() if k != "REDIS_ENABLED"}

        def instance(name: str) -> dict[str, str]:
            directory = str(tmp_path / name)
            return {**common, "REDIS_INSTANCE_ID": name, "PROMETHEUS_MULTIPROC_DIR": directory}

        with (
            Agent(tmp_path, ["--source", "redis"], env=sidecar_env, name="sidecar") as sidecar,
            Gunicorn(tmp_path, env=instance("hostA"), wait_ready=False, name="a") as a,
            Gunicorn(tmp_path, env=instance("hostB"), wait_ready=False, name="b") as b,
        ):
            a.wait_serving()
            b.wait_serving()

            for g, n in ((a, 3), (b, 4)):
                for _ in range(n):
                    assert g.status("/") == 200
            sidecar.wait_requests(7, 0)

            registry = c.owner("{fleet}")
            nodes = redis_command(registry, "ZRANGE", "gunicorn:{fleet}:nodes", "0", "-1")
            node_a = next(n for n in nodes if "hostA" in n)
            victim = c.owner("{" + node_a + "}")
            replica = replica_of(c, victim)
            redis_command(replica, "CONFIG", "SET", "masterauth", "not-the-password")
            redis_command(victim, "CLIENT", "KILL", "TYPE", "replica")
            for _ in range(3):
                assert a.status("/missing") == 404
            sidecar.wait_requests(7, 3)
            info = redis_command(replica, "INFO", "replication")
            assert "master_link_status:down" in info  # the 4xx counts were never replicated

            assert c.kill_primary("{" + node_a + "}") == victim
            c.wait_failover()
            assert c.owner("{" + node_a + "}") == replica
            for g in (a, b):
                for _ in range(2):
                    assert g.status("/") == 200
            sidecar.wait_requests(11, 3, timeout=60)
            time.sleep(1.5)  # passes go on: nothing counted twice
            sidecar.wait_requests(11, 3, timeout=5)
            for g in (a, b):
                assert "metrics agent exited" not in g.log(), g.log()
