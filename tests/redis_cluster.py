"""A real Redis Cluster for tests: 3 primaries and a replica of each (Debian's
redis-server with ``--cluster-enabled yes``) on free loopback ports, made a
cluster by ``redis-cli --cluster create``, with a node timeout of 1000 ms so
that a failover takes seconds.

``RedisCluster`` starts the nodes and waits until every node says
``cluster_state:ok`` and every replica is in sync; ``kill_primary(key)``
SIGKILLs the primary serving a key and ``wait_failover()`` waits until its
replica serves its slots. ``password``: requirepass (and masterauth) on every node. ``tls=True``: TLS only, between the nodes too
(``tls-cluster``), with a test CA (redis_server.make_tls_files). For one
server see redis_server.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gunicorn_prometheus_exporter import _native
from gunicorn_runner import redis_command, wait_for
from redis_server import free_port, make_tls_files

NODE_TIMEOUT_MS = 1000


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _text(reply: Any) -> Any:
    """A reply with bulk strings as str, as redis_command gives them."""
    if isinstance(reply, bytes):
        return reply.decode(errors="replace")
    if isinstance(reply, list):
        return [_text(r) for r in reply]
    return reply


class ClusterNode:
    """One redis-server in cluster mode, without persistence."""

    def __init__(
        self,
        directory: Path,
        name: str,
        tls: dict[str, str] | None = None,
        password: str | None = None,
    ) -> None:
        self.port = free_cluster_port()
        self.tls = tls
        self.password = password
        self.args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"{name}.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            f"{name}.log",
        ]
        if password:  # the replicas authenticate to their primary too
            self.args += ["--requirepass", password, "--masterauth", password]
        if tls:
            self.args[self.args.index("--port") + 1] = "0"
            self.args += [
                "--tls-port",
                str(self.port),
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--tls-cert-file",
                tls["server.crt"],
                "--tls-key-file",
                tls["server.key"],
                "--tls-ca-cert-file",
                tls["ca.crt"],
                # What a node shows the others (its server certificate is for serving only).
                "--tls-client-cert-file",
                tls["client.crt"],
                "--tls-client-key-file",
                tls["client.key"],
                "--tls-auth-clients",
                "optional",
            ]
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: self.command("PING") == "PONG", 10, message=f"redis-server {name}")

    def command(self, *args: str) -> Any:
        if not self.tls:
            return redis_command(self.port, *args, password=self.password)
        # One node, no routing: the native client's plain TLS connection.
        node = _native.RedisClient(
            host="127.0.0.1",
            port=self.port,
            password=self.password or "",
            ssl=True,
            ssl_ca_certs=self.tls["ca.crt"],
        )
        return _text(node.execute(list(args)))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing more reaches the replicas or the bus."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class RedisCluster:
    """``primaries`` primaries with one replica each."""

    def __init__(self, primaries: int = 3, tls: bool = False, password: str | None = None) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError(
                "redis-server and redis-cli are needed (Debian package redis-server)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="gpe-cluster-"))
        self.tls = make_tls_files(self.dir) if tls else None
        self.password = password
        self.nodes: list[ClusterNode] = []
        try:
            for i in range(primaries * 2):
                self.nodes.append(ClusterNode(self.dir, f"node-{i}", self.tls, password))
            cli_tls = ["--tls", "--cacert", self.tls["ca.crt"]] if self.tls else []
            if password:
                cli_tls += ["-a", password, "--no-auth-warning"]
            subprocess.run(
                ["redis-cli", *cli_tls, "--cluster", "create"]
                + [f"127.0.0.1:{n.port}" for n in self.nodes]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    @property
    def seeds(self) -> str:
        """REDIS_CLUSTER_NODES: every node, "127.0.0.1:port,..."."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def env(self) -> dict[str, str]:
        env = {"REDIS_ENABLED": "true", "REDIS_CLUSTER_NODES": self.seeds}
        if self.tls:
            env.update(REDIS_SSL="true", REDIS_SSL_CA_CERTS=self.tls["ca.crt"])
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        return env

    def owner(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot, as a live node says."""
        slot = int(self.live[0].command("CLUSTER", "KEYSLOT", key))
        for first, last, primary, *_ in self.live[0].command("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                return int(primary[1])
        raise AssertionError(f"no primary serves slot {slot}")

    def primary_ports(self) -> set[int]:
        return {int(r[2][1]) for r in self.live[0].command("CLUSTER", "SLOTS")}

    def ready(self) -> bool:
        dead = {n.port for n in self.nodes if not n.alive}
        for n in self.live:
            if "cluster_state:ok" not in n.command("CLUSTER", "INFO"):
                return False
            replication = n.command("INFO", "replication")
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return False
            if {int(r[2][1]) for r in n.command("CLUSTER", "SLOTS")} & dead:
                return False
        return True

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(self.ready, timeout, interval=0.1, message="the Redis Cluster to be ready")

    def kill_primary(self, key: str) -> int:
        """SIGKILL the primary serving ``key``; its port."""
        port = self.owner(key)
        next(n for n in self.nodes if n.port == port).kill()
        return port

    def wait_failover(self, timeout: float = 30) -> None:
        """Until a replica serves the slots of every killed primary."""
        self.wait_ready(timeout)

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
