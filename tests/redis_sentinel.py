"""Real Redis Sentinel deployments for tests: a master, its replicas and
sentinels (Debian's redis-server run with ``--sentinel`` on a writable
sentinel.conf), all on free loopback ports.

``SentinelCluster`` starts them and waits until every replica is in sync and
every sentinel knows the replicas and the other sentinels (so that a
failover can be agreed on);
``kill_master()`` is SIGKILL and ``wait_failover()`` waits for the sentinels
to name another master.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gunicorn_runner import redis_command, wait_for
from redis_server import RedisServer, free_port

MASTER_NAME = "mymaster"


class Sentinel:
    """One redis-sentinel process monitoring ``master_port`` as ``name``."""

    def __init__(self, master_port: int, name: str, quorum: int, password: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpe-sentinel-"))
        self.port = free_port()
        self.password = password
        conf = self.dir / "sentinel.conf"  # the sentinel rewrites it: writable
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.dir}",
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 2000",
            f"sentinel parallel-syncs {name} 1",
        ]
        if password:
            lines.append(f"requirepass {password}")
        conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.command("PING") == "PONG", 10, message="a sentinel to start")

    def command(self, *args: str) -> Any:
        return redis_command(self.port, *args, password=self.password)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2)."""

    def __init__(
        self, replicas: int = 1, sentinels: int = 3, sentinel_password: str | None = None
    ) -> None:
        # A replica's first sync at once (not after the 5 s default delay).
        now = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(extra_args=now)
        self.replicas: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []
        try:
            for _ in range(replicas):
                self.replicas.append(
                    RedisServer(
                        extra_args=(*now, "--replicaof", "127.0.0.1", str(self.master.port))
                    )
                )
            for _ in range(sentinels):
                self.sentinels.append(Sentinel(self.master.port, MASTER_NAME, 2, sentinel_password))
            self._wait_known(replicas, sentinels - 1)
        except BaseException:
            self.close()
            raise

    def _wait_known(self, replicas: int, others: int) -> None:
        def known() -> bool:
            for r in self.replicas:
                if "master_link_status:up" not in redis_command(r.port, "INFO", "replication"):
                    return False
            for s in self.sentinels:
                info = s.command("SENTINEL", "master", MASTER_NAME)
                fields = dict(zip(info[::2], info[1::2], strict=True))
                if int(fields["num-slaves"]) < replicas:
                    return False
                if int(fields["num-other-sentinels"]) < others:
                    return False
            return True

        wait_for(
            known, 30, interval=0.2, message="the sentinels to know each other and the replicas"
        )

    @property
    def sentinel_list(self) -> str:
        """REDIS_SENTINELS: "127.0.0.1:port,127.0.0.1:port,..."."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        env = {
            "REDIS_ENABLED": "true",
            "REDIS_SENTINELS": self.sentinel_list,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }
        if self.sentinels and self.sentinels[0].password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinels[0].password
        return env

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            try:
                return int(s.command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)[1])
            except OSError:
                continue
        raise AssertionError("no sentinel answers")

    def server(self, port: int) -> RedisServer:
        return next(r for r in [self.master, *self.replicas] if r.port == port)

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master_port()
        self.server(port).kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until every sentinel names a master other than ``old_port`` and it
        says it is one; the new master's port."""

        def promoted() -> int | None:
            ports = {
                int(s.command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)[1])
                for s in self.sentinels
            }
            if len(ports) != 1 or old_port in ports:
                return None
            port = ports.pop()
            return port if redis_command(port, "ROLE")[0] == "master" else None

        return wait_for(promoted, timeout, interval=0.2, message="the sentinels to fail over")

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        for r in [self.master, *self.replicas]:
            r.close()

    def __enter__(self) -> SentinelCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
