"""Real redis-server processes for tests and benchmarks (Debian's package).

``RedisServer`` starts one on a free loopback port (or a Unix socket), with
optional password, ACL user, TLS and extra arguments (a replica's
--replicaof), and stops it; ``restart()`` keeps the port and drops the data
(no persistence), as a crashed Redis would; ``kill()`` is SIGKILL. For
Redis Sentinel see redis_sentinel.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ports import free_port


def make_tls_files(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client
    certificate, made with the openssl command."""
    d = directory

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    # Extensions as Python 3.13's default context (VERIFY_X509_STRICT) requires:
    # key usage on the CA, key identifiers on the certificates it signs.
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )
    for name, san, usage in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", "serverAuth"),
        ("client", "", "clientAuth"),
    ):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
        )
        ext = d / f"{name}.ext"
        ext.write_text(
            san + "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(d / f"{name}.crt"),
            "-extfile",
            str(ext),
        )
    return {
        name: str(d / name)
        for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    }


class RedisServer:
    # REDIS_LAYOUT for the processes given env(): the modules that test the
    # 0.2.x series layout's keys set "series" (pin_series_layout); None: the default.
    layout: str | None = None

    def __init__(
        self,
        password: str | None = None,
        acl_user: tuple[str, str] | None = None,
        tls: bool = False,
        unix_socket: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="gpe-redis-"))
        self.port = free_port()
        self.password = password
        self.acl_user = acl_user
        self.tls = make_tls_files(self.dir) if tls else None
        self.unix_socket = str(self.dir / "redis.sock") if unix_socket else None
        self.extra_args = extra_args  # e.g. ("--replicaof", "127.0.0.1", "6379")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def _args(self) -> list[str]:
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
        ]
        if self.tls:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.tls["server.crt"],
                "--tls-key-file",
                self.tls["server.key"],
                "--tls-ca-cert-file",
                self.tls["ca.crt"],
                "--tls-auth-clients",
                "optional",
            ]
        else:
            args += ["--port", str(self.port)]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.acl_user:
            user, secret = self.acl_user
            args += ["--user", user, "on", f">{secret}", "~*", "&*", "+@all"]
        return args + list(self.extra_args)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {' '.join(self._args())}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, nothing more sent to replicas."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port with empty data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for gunicorn_prometheus_exporter's RedisClient."""
        kw: dict[str, object] = {"host": "127.0.0.1", "port": self.port}
        if self.unix_socket:
            kw = {"unix_socket_path": self.unix_socket}
        if self.password:
            kw["password"] = self.password
        if self.acl_user:
            kw["username"], kw["password"] = self.acl_user
        if self.tls:
            kw.update(ssl=True, ssl_ca_certs=self.tls["ca.crt"])
        return kw

    def env(self) -> dict[str, str]:
        """REDIS_* variables that point at this server."""
        env = {"REDIS_ENABLED": "true", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.port)}
        if RedisServer.layout is not None:
            env["REDIS_LAYOUT"] = RedisServer.layout
        if self.unix_socket:
            env["REDIS_UNIX_SOCKET"] = self.unix_socket
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.acl_user:
            env["REDIS_USERNAME"], env["REDIS_PASSWORD"] = self.acl_user
        if self.tls:
            env.update(REDIS_SSL="true", REDIS_SSL_CA_CERTS=self.tls["ca.crt"])
        return env

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
