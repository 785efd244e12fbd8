"""RedisClient against real redis-servers: transports (TCP, Unix socket,
TLS with CA verification and mutual TLS), authentication (password, ACL
user), database selection, the redis-py-like commands, errors (refused,
silent server, wrong password), server TIME with its local fallback,
reconnecting after a Redis restart, and ``with_retry``.

URL and environment parsing live in test_redis_config.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gunicorn_prometheus_exporter.backend import (
    RedisAuthenticationError,
    RedisClient,
    RedisConnectionError,
    RedisError,
    RedisResponseError,
    RedisTimeoutError,
    with_retry,
)
from gunicorn_prometheus_exporter.backend.core import errors as errors_module
from redis_server import RedisServer, free_port

# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server():
    server = RedisServer(tls=True)
    yield server
    server.close()


@pytest.fixture(scope="module")
def password_server():
    server = RedisServer(password="s3cret pass")
    yield server
    server.close()


@pytest.fixture(scope="module")
def acl_server():
    server = RedisServer(acl_user=("metrics", "acl-secret"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def unix_server():
    server = RedisServer(unix_socket=True)
    yield server
    server.close()


def roundtrip(client: RedisClient, key: str = "roundtrip") -> None:
    """A write and a read through `client`, checked exactly."""
    assert client.ping() is True
    assert client.set(key, "v\x00\xff value") is True
    assert client.get(key) == "v\x00\xff value".encode()
    assert client.delete(key) == 1
    assert client.get(key) is None


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------


def test_error_hierarchy() -> None:
    for error in (
        RedisConnectionError,
        RedisTimeoutError,
        RedisAuthenticationError,
        RedisResponseError,
    ):
        assert issubclass(error, RedisError)
    assert issubclass(RedisError, Exception)
    assert not issubclass(RedisTimeoutError, RedisConnectionError)
    assert not issubclass(RedisAuthenticationError, RedisConnectionError)


def test_commands_like_redis_py(rclient: RedisClient) -> None:
    roundtrip(rclient)
    assert rclient.set("n", 1.5) is True
    assert rclient.get("n") == b"1.5"
    assert rclient.exists("n", "n", "missing") == 2
    assert rclient.ttl("n") == -1
    assert rclient.expire("n", 100) is True
    assert 99 <= rclient.ttl("n") <= 100
    assert rclient.expire("missing", 100) is False
    assert rclient.ttl("missing") == -2

    assert rclient.hset("h", "a", "1") == 1
    assert rclient.hset("h", mapping={"b": "2", "c": 3}) == 2
    assert rclient.hset("h", "a", "1b") == 0
    assert rclient.hget("h", "a") == b"1b"
    assert rclient.hget("h", "zz") is None
    assert rclient.hsetnx("h", "a", "x") is False
    assert rclient.hsetnx("h", "d", "4") is True
    assert rclient.hgetall("h") == {b"a": b"1b", b"b": b"2", b"c": b"3", b"d": b"4"}
    assert rclient.hgetall("missing") == {}
    with pytest.raises(ValueError):
        rclient.hset("h")

    for i in range(2500):  # more than one SCAN page
        rclient.execute_command("SET", f"scan:{i}", i)
    seen = list(rclient.scan_iter(match="scan:*", count=100))
    assert len(seen) == len(set(seen)) == 2500
    assert set(seen) == {f"scan:{i}".encode() for i in range(2500)}
    assert sorted(rclient.keys("h*")) == [b"h"]
    assert rclient.delete() == 0
    assert rclient.delete("h", "n", "missing") == 2


def test_execute_command_replies_and_errors(rclient: RedisClient) -> None:
    assert rclient.execute_command("PING") == "PONG"
    assert rclient.execute_command("INCRBY", "i", 5) == 5
    assert rclient.execute_command("RPUSH", "l", b"\x00", "x") == 2
    assert rclient.execute_command("LRANGE", "l", 0, -1) == [b"\x00", b"x"]
    with pytest.raises(RedisResponseError, match="WRONGTYPE"):
        rclient.execute_command("GET", "l")
    with pytest.raises(RedisResponseError):
        rclient.execute_command("NOSUCHCOMMAND")
    # a server error does not break the connection
    assert rclient.ping() is True


def test_pipeline_execute_returns_errors_in_place(rclient: RedisClient) -> None:
    replies = rclient.pipeline_execute(
        [["SET", "a", "1"], ["INCR", "a", "x"], ["INCR", "a"], ["GET", "nothing"], ["HGETALL", "a"]]
    )
    assert replies[0] == "OK"
    assert isinstance(replies[1], RedisResponseError)
    assert replies[2] == 2
    assert replies[3] is None
    assert isinstance(replies[4], RedisResponseError) and "WRONGTYPE" in str(replies[4])
    # a big batch (more than the internal batch size) comes back complete, in order
    n = 5000
    replies = rclient.pipeline_execute([["INCR", "counter"] for _ in range(n)])
    assert replies == list(range(1, n + 1))


# --------------------------------------------------------------------------
# transports and authentication
# --------------------------------------------------------------------------


def test_password(password_server: RedisServer) -> None:
    roundtrip(RedisClient(**password_server.client_kwargs()))
    assert password_server.client_kwargs()["password"] == "s3cret pass"


def test_acl_user_and_password(acl_server: RedisServer) -> None:
    client = RedisClient(**acl_server.client_kwargs())
    roundtrip(client)
    assert client.execute_command("ACL", "WHOAMI") == b"metrics"


def test_wrong_password_is_an_authentication_error(password_server: RedisServer) -> None:
    client = RedisClient(host="127.0.0.1", port=password_server.port, password="wrong")
    with pytest.raises(RedisAuthenticationError, match="WRONGPASS") as info:
        client.ping()
    assert "wrong" not in str(info.value).replace("WRONGPASS", "")  # never the password


def test_wrong_acl_user_is_an_authentication_error(acl_server: RedisServer) -> None:
    client = RedisClient(
        host="127.0.0.1", port=acl_server.port, username="metrics", password="nope"
    )
    with pytest.raises(RedisAuthenticationError):
        client.ping()


def test_missing_password_is_an_authentication_error(password_server: RedisServer) -> None:
    with pytest.raises(RedisAuthenticationError, match="NOAUTH"):
        RedisClient(host="127.0.0.1", port=password_server.port).ping()


def _three_refused_calls(server: RedisServer) -> list[tuple[str, str]]:
    client = RedisClient(host="127.0.0.1", port=server.port, password="wrong")
    messages = []
    for _ in range(3):
        with pytest.raises(RedisError) as info:
            client.ping()
        messages.append((type(info.value).__name__, str(info.value)))
    return messages


def test_wrong_password_stays_an_authentication_error(password_server: RedisServer) -> None:
    """Found failing on the 2026-11-25 build.

    A second call right after a refused AUTH (within the
    reconnect backoff) must still say *authentication*; today it becomes a
    retryable RedisConnectionError, so with_retry retries a configuration
    error."""
    messages = _three_refused_calls(password_server)
    assert [kind for kind, _ in messages] == ["RedisAuthenticationError"] * 3, messages


def test_error_message_does_not_grow_during_backoff(password_server: RedisServer) -> None:
    """Found failing on the 2026-11-25 build.

    Every call within the backoff appends another
    "; next attempt in ... s" to the stored error text."""
    messages = _three_refused_calls(password_server)
    assert all(m.count("next attempt") <= 1 for _, m in messages), messages


def test_unix_socket(unix_server: RedisServer) -> None:
    client = RedisClient(unix_socket_path=unix_server.unix_socket)
    roundtrip(client)
    assert "unix:" in client.native.description
    # the Unix socket and TCP reach the same server
    client.set("via-unix", "1")
    assert RedisClient(host="127.0.0.1", port=unix_server.port).get("via-unix") == b"1"


def test_tls_with_ca_verification(tls_server: RedisServer) -> None:
    client = RedisClient(**tls_server.client_kwargs())
    roundtrip(client)
    assert "(TLS)" in client.native.description
    # by name too: the certificate is for 127.0.0.1 and localhost
    roundtrip(
        RedisClient(
            host="localhost", port=tls_server.port, ssl=True, ssl_ca_certs=tls_server.tls["ca.crt"]
        )
    )


def test_tls_without_the_ca_fails(tls_server: RedisServer) -> None:
    client = RedisClient(host="127.0.0.1", port=tls_server.port, ssl=True)
    start = time.monotonic()
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        client.ping()
    assert time.monotonic() - start < 2


def _other_name_for_loopback() -> str | None:
    for name in (socket.gethostname(), "runsc", "vm"):
        try:
            addresses = {
                info[4][0] for info in socket.getaddrinfo(name, 1, type=socket.SOCK_STREAM)
            }
        except OSError:
            continue
        if name != "localhost" and addresses == {"127.0.0.1"}:
            return name
    return None


def test_tls_wrong_name_fails(tls_server: RedisServer) -> None:
    """The certificate is valid (our CA) but for 127.0.0.1/localhost only."""
    name = _other_name_for_loopback()
    if name is None:
        pytest.skip("no other name resolves to 127.0.0.1 only")
    client = RedisClient(
        host=name, port=tls_server.port, ssl=True, ssl_ca_certs=tls_server.tls["ca.crt"]
    )
    with pytest.raises(RedisConnectionError, match="verify"):
        client.ping()
    # the same name without verification works: the failure was the name
    roundtrip(RedisClient(host=name, port=tls_server.port, ssl=True, ssl_verify=False))


def test_tls_without_verification(tls_server: RedisServer) -> None:
    roundtrip(RedisClient(host="127.0.0.1", port=tls_server.port, ssl=True, ssl_verify=False))


def test_tls_to_a_plain_server_fails(redis_srv: RedisServer) -> None:
    client = RedisClient(
        host="127.0.0.1",
        port=redis_srv.port,
        ssl=True,
        ssl_verify=False,
        socket_timeout=0.3,
        socket_connect_timeout=0.3,
    )
    with pytest.raises((RedisConnectionError, RedisTimeoutError)):
        client.ping()


def test_mutual_tls(tls_server: RedisServer) -> None:
    admin = RedisClient(**tls_server.client_kwargs())
    assert admin.execute_command("CONFIG", "SET", "tls-auth-clients", "yes") == "OK"
    try:
        with pytest.raises(RedisConnectionError):
            RedisClient(**tls_server.client_kwargs()).ping()  # no client certificate
        with_cert = RedisClient(
            **tls_server.client_kwargs(),
            ssl_certfile=tls_server.tls["client.crt"],
            ssl_keyfile=tls_server.tls["client.key"],
        )
        roundtrip(with_cert)
        with pytest.raises(RedisConnectionError, match="client"):
            RedisClient(**tls_server.client_kwargs(), ssl_certfile="/nonexistent.crt").ping()
    finally:
        admin.execute_command("CONFIG", "SET", "tls-auth-clients", "optional")


# --------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------


def test_db_selection(redis_srv: RedisServer) -> None:
    db2 = RedisClient(**redis_srv.client_kwargs(), db=2)
    db2.set("only-in-2", "x")
    assert db2.get("only-in-2") == b"x"
    db0 = RedisClient(**redis_srv.client_kwargs())
    assert db0.get("only-in-2") is None
    assert db0.execute_command("SELECT", 2) == "OK"
    assert db0.get("only-in-2") == b"x"
    assert "/2" in db2.native.description


def test_db_out_of_range_fails(redis_srv: RedisServer) -> None:
    with pytest.raises(RedisError):
        RedisClient(**redis_srv.client_kwargs(), db=99).ping()


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------


def test_nothing_listening_fails_fast() -> None:
    client = RedisClient(host="127.0.0.1", port=free_port(), socket_connect_timeout=5)
    start = time.monotonic()
    with pytest.raises(RedisConnectionError, match=r"127\.0\.0\.1"):
        client.ping()
    assert time.monotonic() - start < 1.0
    # within the backoff, calls fail at once, still as connection errors
    start = time.monotonic()
    with pytest.raises(RedisConnectionError):
        client.get("x")
    assert time.monotonic() - start < 0.1


def test_unresolvable_host_is_a_connection_error() -> None:
    with pytest.raises(RedisConnectionError):
        RedisClient(host="no-such-host.invalid", port=6379, socket_connect_timeout=2).ping()


def test_unix_socket_missing_is_a_connection_error(tmp_path) -> None:
    with pytest.raises(RedisConnectionError):
        RedisClient(unix_socket_path=str(tmp_path / "none.sock")).ping()


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_silent_server_times_out() -> None:
    server = SilentServer()
    try:
        client = RedisClient(
            host="127.0.0.1", port=server.port, socket_timeout=0.3, socket_connect_timeout=0.3
        )
        start = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            client.ping()
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 1.5, elapsed
        assert len(server.accepted) >= 1
    finally:
        server.close()


def test_tls_to_a_silent_server_times_out() -> None:
    server = SilentServer()
    try:
        client = RedisClient(
            host="127.0.0.1",
            port=server.port,
            ssl=True,
            ssl_verify=False,
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
        )
        start = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            client.ping()
        assert time.monotonic() - start < 1.5
    finally:
        server.close()


# --------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------


def test_server_time(rclient: RedisClient) -> None:
    seconds, micros = rclient.time()
    assert isinstance(seconds, int) and isinstance(micros, int)
    assert 0 <= micros < 1_000_000
    assert abs(seconds + micros / 1e6 - time.time()) < 2
    assert abs(rclient.native.server_time() - time.time()) < 2


def test_server_time_falls_back_to_local_time() -> None:
    client = RedisClient(host="127.0.0.1", port=free_port())
    before = time.time()
    value = client.native.server_time()
    after = time.time()
    assert before - 0.001 <= value <= after + 0.001


# --------------------------------------------------------------------------
# reconnect
# --------------------------------------------------------------------------


def test_reconnects_after_a_restart() -> None:
    server = RedisServer()
    try:
        client = RedisClient(**server.client_kwargs())
        client.set("k", "1")
        epoch = client.native.connection_epoch
        server.stop()
        for _ in range(3):
            with pytest.raises(RedisConnectionError):
                client.get("k")
        server.start()

        def works() -> bool:
            try:
                return client.ping()
            except RedisConnectionError:
                return False

        start = time.monotonic()
        while not works():
            assert time.monotonic() - start < 3, "no reconnect within 3 s"
            time.sleep(0.02)
        assert client.get("k") is None  # a restarted server: empty
        assert client.native.connection_epoch == epoch + 1
        client.set("k", "2")
        assert client.get("k") == b"2"
    finally:
        server.close()


def test_connection_dropped_by_server_is_reopened(
    redis_srv: RedisServer, rclient: RedisClient
) -> None:
    rclient.set("x", "1")
    epoch = rclient.native.connection_epoch
    killer = RedisClient(**redis_srv.client_kwargs())
    assert killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
    # the first call notices the dead connection; a later one reconnects
    try:
        value = rclient.get("x")
    except RedisConnectionError:
        value = None
    if value is None:
        time.sleep(0.15)
        value = rclient.get("x")
    assert value == b"1"
    assert rclient.native.connection_epoch == epoch + 1


# --------------------------------------------------------------------------
# with_retry
# --------------------------------------------------------------------------


class Flaky:
    def __init__(self, failures: list[BaseException], result: object = "done") -> None:
        self.failures = list(failures)
        self.calls = 0
        self.result = result

    def __call__(self) -> object:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(errors_module.time, "sleep", recorded.append)
    return recorded


def test_with_retry_returns_at_once(sleeps: list[float]) -> None:
    func = Flaky([])
    assert with_retry(func) == "done"
    assert func.calls == 1 and sleeps == []


def test_with_retry_retries_with_exponential_backoff(sleeps: list[float]) -> None:
    func = Flaky([RedisConnectionError("a"), RedisTimeoutError("b"), RedisConnectionError("c")])
    assert with_retry(func, max_retries=4, delay=0.5) == "done"
    assert func.calls == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_with_retry_default_delay(sleeps: list[float]) -> None:
    func = Flaky([RedisConnectionError("a")])
    assert with_retry(func) == "done"
    assert sleeps == [1]


def test_with_retry_gives_up_after_max_retries(sleeps: list[float]) -> None:
    last = RedisTimeoutError("last")
    func = Flaky(
        [RedisConnectionError("1"), RedisConnectionError("2"), last, RedisConnectionError("4")]
    )
    with pytest.raises(RedisTimeoutError) as info:
        with_retry(func, max_retries=3, delay=0.01)
    assert info.value is last
    assert func.calls == 3
    assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize(
    "error",
    [ValueError("v"), RedisAuthenticationError("auth"), RedisResponseError("ERR"), KeyError("k")],
)
def test_with_retry_does_not_retry_other_errors(sleeps: list[float], error: BaseException) -> None:
    func = Flaky([error])
    with pytest.raises(type(error)) as info:
        with_retry(func, max_retries=5, delay=0.01)
    assert info.value is error
    assert func.calls == 1 and sleeps == []


def test_with_retry_really_waits() -> None:
    func = Flaky([RedisConnectionError("a"), RedisConnectionError("b")])
    start = time.monotonic()
    assert with_retry(func, max_retries=3, delay=0.05) == "done"
    assert 0.14 <= time.monotonic() - start < 1.0  # 0.05 + 0.1


def test_with_retry_on_a_real_client(redis_srv: RedisServer) -> None:
    client = RedisClient(host="127.0.0.1", port=free_port())
    start = time.monotonic()
    with pytest.raises(RedisConnectionError):
        with_retry(client.ping, max_retries=2, delay=0.01)
    assert time.monotonic() - start < 1
    assert with_retry(RedisClient(**redis_srv.client_kwargs()).ping, delay=0.01) is True
