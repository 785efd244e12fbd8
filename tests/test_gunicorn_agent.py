"""End to end: the agent's endpoint. HTTPS and mutual TLS, a metrics port
already taken, invalid settings refused at start, the binary's --help."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gunicorn_runner import (
    CONFIG,
    DEMO_DIR,
    Gunicorn,
    agent_binary,
    alive,
    cmdline,
    free_port,
    parse,
    value,
    wait_for,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed server certificate, and a CA with server and client
    certificates (for mutual TLS), made with the openssl command."""
    from redis_server import make_tls_files

    d = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(d / "self.key"),
            "-out",
            str(d / "self.crt"),
        ],
        check=True,
        capture_output=True,
    )
    files = make_tls_files(d)
    files.update({"self.crt": str(d / "self.crt"), "self.key": str(d / "self.key")})
    return files


def https_get(port: int, context: ssl.SSLContext, path: str = "/metrics") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=5, context=context) as r:
        return r.status, r.read()


def client_context(cafile: str, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def start_tls(tmp_path: Path, env: dict[str, str], context: ssl.SSLContext) -> Gunicorn:
    g = Gunicorn(tmp_path, env=env, wait_ready=False)
    try:
        g.wait_serving()
        wait_for(
            lambda: https_get(g.metrics_port, context, "/health")[0] == 200,
            10,
            message=lambda: f"the agent on https:\n{g.log()}",
        )
    except BaseException:
        g.stop()
        raise
    return g


def test_https(tmp_path: Path, certs: dict[str, str]) -> None:
    env = {
        "PROMETHEUS_SSL_CERTFILE": certs["self.crt"],
        "PROMETHEUS_SSL_KEYFILE": certs["self.key"],
    }
    ctx = client_context(certs["self.crt"])
    with start_tls(tmp_path, env, ctx) as g:
        for _ in range(3):
            assert g.status("/") == 200
        assert https_get(g.metrics_port, ctx)[0] == 200

        def counted() -> bool:
            return (
                value(
                    parse(https_get(g.metrics_port, ctx)[1].decode()),
                    "gunicorn_worker_requests_total",
                )
                == 3
            )

        wait_for(counted, 5)
        # a client that does not trust the certificate is refused
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            https_get(g.metrics_port, ssl.create_default_context())
        # and plain HTTP gets no metrics
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{g.metrics_port}/metrics", timeout=3
            ) as r:
                plain = r.read()
        except (OSError, http.client.HTTPException):
            plain = b""
        assert b"gunicorn_worker_requests_total" not in plain


def test_mutual_tls(tmp_path: Path, certs: dict[str, str]) -> None:
    env = {
        "PROMETHEUS_SSL_CERTFILE": certs["server.crt"],
        "PROMETHEUS_SSL_KEYFILE": certs["server.key"],
        "PROMETHEUS_SSL_CLIENT_CAFILE": certs["ca.crt"],
        "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED": "true",
    }
    with_cert = client_context(certs["ca.crt"], (certs["client.crt"], certs["client.key"]))
    without_cert = client_context(certs["ca.crt"])
    with start_tls(tmp_path, env, with_cert) as g:
        assert g.status("/") == 200
        wait_for(
            lambda: (
                value(
                    parse(https_get(g.metrics_port, with_cert)[1].decode()),
                    "gunicorn_worker_requests_total",
                )
                == 1
            ),
            5,
        )

        # Without a client certificate the handshake fails: no HTTP answer at all.
        with (
            socket.create_connection(("127.0.0.1", g.metrics_port), timeout=5) as raw,
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            without_cert.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            # TLS 1.3: the server's refusal arrives with the first read
            tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = tls.recv(100)
            assert data, "the agent closed the connection without an alert"
            raise AssertionError(f"the agent answered a client without a certificate: {data!r}")
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            https_get(g.metrics_port, without_cert)

        # a certificate from another CA is refused too
        other = client_context(certs["ca.crt"], (certs["self.crt"], certs["self.key"]))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            https_get(g.metrics_port, other)

        # and the agent still serves the good client afterwards
        status, body = https_get(g.metrics_port, with_cert, "/health")
        assert (status, body.strip()) == (200, b"ok")


def test_metrics_port_in_use(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with Gunicorn(tmp_path, metrics_port=port, wait_ready=False) as g:
            g.wait_serving()
            wait_for(
                lambda: "already in use" in g.log(),
                10,
                message=lambda: f"the error in the log:\n{g.log()}",
            )
            lines = [line for line in g.log().splitlines() if "already in use" in line]
            assert any(str(port) in line for line in lines), lines
            # the workers serve all the same
            for _ in range(5):
                assert g.status("/") == 200
            assert g.status("/missing") == 404
            assert g.proc.poll() is None
            # once the port is free, the restarted agent serves the counts
            busy.close()
            wait_for(
                lambda: g.samples(),
                8,
                message=lambda: f"the agent restarted on the freed port:\n{g.log()}",
            )
            samples = g.wait_metrics(lambda s: value(s, "gunicorn_worker_requests_total") == 6)
            assert value(samples, "gunicorn_worker_requests_total", method="GET", status="4xx") == 1
    finally:
        busy.close()


INVALID = [
    ("PROMETHEUS_METRICS_PORT", "notaport"),
    ("PROMETHEUS_METRICS_PORT", "70000"),
    ("REDIS_ENABLED", "maybe"),
    ("REDIS_PORT", "x"),
    ("PROMETHEUS_SSL_CERTFILE", "/nonexistent/cert.pem"),
    ("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", "perhaps"),
    ("GUNICORN_PROMETHEUS_SAMPLE_INTERVAL", "-1"),
    ("REDIS_KEY_PREFIX", "bad*prefix"),
]


@pytest.mark.parametrize(("name", "raw"), INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_setting_stops_gunicorn_naming_it(tmp_path: Path, name: str, raw: str) -> None:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("PROMETHEUS_", "REDIS_", "GUNICORN_"))
    }
    env.update(
        {
            "PROMETHEUS_METRICS_PORT": str(free_port()),
            "PROMETHEUS_BIND_ADDRESS": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp"),
            name: raw,
        }
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            CONFIG,
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(DEMO_DIR),
            "--no-control-socket",
            "app:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert name in err.decode(), err.decode()[-2000:]
    # it stopped before serving anything
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_valid_settings_in_any_case_start(tmp_path: Path) -> None:
    env = {
        "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED": "OFF",
        "REDIS_ENABLED": "No",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp"),
    }
    with Gunicorn(tmp_path, env=env) as g:
        assert g.status("/") == 200
        g.wait_metrics(lambda s: value(s, "gunicorn_worker_requests_total") == 1)
        assert (tmp_path / "mp").is_dir()
        assert any(p.suffix == ".db" for p in (tmp_path / "mp").iterdir())


def test_missing_multiproc_dir_is_created_without_a_false_warning(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming a directory that does not exist yet:
    the master creates it and native values are on, so nothing may say
    they are off."""
    directory = tmp_path / "not-yet"
    with Gunicorn(tmp_path, env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as g:
        assert g.status("/") == 200
        g.wait_metrics(lambda s: value(s, "gunicorn_worker_requests_total") == 1)
        assert directory.is_dir()
        assert "native multiprocess values are off" not in g.log(), g.log()


def test_private_directory_is_removed_at_exit(tmp_path: Path) -> None:
    g = Gunicorn(tmp_path)
    try:
        agent_args = cmdline(g.agent_pids()[0])
        directory = Path(agent_args[agent_args.index("--directory") + 1])
        assert directory.is_dir()
        assert str(directory).startswith("/dev/shm/")
        agent = g.agent_pids()[0]
        g.signal(__import__("signal").SIGTERM)
        assert g.proc.wait(10) == 0
        # (checked before stop(), which removes what a killed master leaves)
        assert not directory.exists(), f"{directory} left behind"
        wait_for(lambda: not alive(agent), 5, message="the agent gone with its master")
    finally:
        g.stop()


def test_agent_help() -> None:
    binary = agent_binary()
    assert binary.is_file()
    started = time.monotonic()
    result = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    for option in ("--source", "--port", "--mirror"):
        assert option in text, option
    assert time.monotonic() - started < 5
    # the console script says the same
    script = Path(sys.executable).parent / "gunicorn-prometheus-agent"
    if script.exists():
        again = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=10, check=False
        )
        assert again.returncode == 0
        assert "--mirror" in again.stdout + again.stderr


def test_agent_rejects_an_unknown_option() -> None:
    result = subprocess.run(
        [str(agent_binary()), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr
