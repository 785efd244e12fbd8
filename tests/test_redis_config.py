"""Redis configuration: the REDIS_* variables and PROMETHEUS_REDIS_URL as
``config`` reads them (defaults, invalid values naming the variable), URL
parsing (redis://user:pass@host:port/db, rediss:// with query options,
unix:///path?db=N), and end to end: ``RedisClient.from_config()`` /
``from_url()`` reaching real servers - database selection, ACL users, TLS,
mutual TLS, Unix sockets.
"""

from __future__ import annotations

import socket

import pytest

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.backend import (
    RedisAuthenticationError,
    RedisClient,
    RedisConnectionError,
    RedisMultiProcessCollector,
)
from gunicorn_prometheus_exporter.config import ExporterConfig, config
from redis_server import RedisServer


@pytest.fixture(autouse=True)
def clean_env(no_exporter_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return no_exporter_env


@pytest.fixture(scope="module")
def tls_server():
    server = RedisServer(tls=True)
    yield server
    server.close()


@pytest.fixture(scope="module")
def acl_server():
    server = RedisServer(acl_user=("svc", "p@ss:w/rd"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def unix_server():
    server = RedisServer(unix_socket=True, password="unixpw")
    yield server
    server.close()


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------


def test_defaults() -> None:
    assert isinstance(config, ExporterConfig)
    assert config.redis_enabled is False
    assert config.redis_host == "localhost"
    assert config.redis_port == 6379
    assert config.redis_db == 0
    assert config.redis_key_prefix == "gunicorn"
    assert config.redis_ttl_seconds == 300
    assert config.redis_ttl_disabled is False
    assert config.redis_password is None
    assert config.redis_ssl is False
    assert config.redis_username is None
    assert config.redis_url is None
    assert config.redis_unix_socket == ""
    assert config.redis_instance_id == socket.gethostname()
    assert config.redis_flush_interval == 1.0
    assert config.redis_ssl_verify is True


def test_read_at_access(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_ENABLED", "TRUE")
    clean_env.setenv("REDIS_HOST", "redis.example")
    clean_env.setenv("REDIS_PORT", "6380")
    clean_env.setenv("REDIS_DB", "7")
    clean_env.setenv("REDIS_KEY_PREFIX", "app:metrics")
    clean_env.setenv("REDIS_TTL_SECONDS", "42")
    clean_env.setenv("REDIS_PASSWORD", "pw")
    clean_env.setenv("REDIS_SSL", "yes")
    clean_env.setenv("REDIS_USERNAME", "user")
    clean_env.setenv("REDIS_INSTANCE_ID", "pod-7")
    clean_env.setenv("REDIS_FLUSH_INTERVAL", "0.25")
    assert config.redis_enabled is True
    assert config.redis_host == "redis.example"
    assert config.redis_port == 6380
    assert config.redis_db == 7
    assert config.redis_key_prefix == "app:metrics"
    assert config.redis_ttl_seconds == 42
    assert config.redis_password == "pw"
    assert config.redis_ssl is True
    assert config.redis_username == "user"
    assert config.redis_instance_id == "pod-7"
    assert config.redis_flush_interval == 0.25
    clean_env.setenv("REDIS_ENABLED", "off")
    assert config.redis_enabled is False


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("Off", False),
        ("", False),
    ],
)
def test_booleans(clean_env: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    clean_env.setenv("REDIS_ENABLED", value)
    clean_env.setenv("REDIS_SSL", value)
    clean_env.setenv("REDIS_TTL_DISABLED", value)
    assert config.redis_enabled is expected
    assert config.redis_ssl is expected
    assert config.redis_ttl_disabled is expected


def test_ttl_disabled_by_zero(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_TTL_SECONDS", "0")
    assert config.redis_ttl_disabled is True


@pytest.mark.parametrize(
    "name, value, attribute",
    [
        ("REDIS_ENABLED", "maybe", "redis_enabled"),
        ("REDIS_SSL", "2", "redis_ssl"),
        ("REDIS_TTL_DISABLED", "sometimes", "redis_ttl_disabled"),
        ("REDIS_PORT", "abc", "redis_port"),
        ("REDIS_PORT", "0", "redis_port"),
        ("REDIS_PORT", "65536", "redis_port"),
        ("REDIS_DB", "-1", "redis_db"),
        ("REDIS_DB", "1.5", "redis_db"),
        ("REDIS_TTL_SECONDS", "ten", "redis_ttl_seconds"),
        ("REDIS_TTL_SECONDS", "-5", "redis_ttl_seconds"),
        ("REDIS_FLUSH_INTERVAL", "0", "redis_flush_interval"),
        ("REDIS_FLUSH_INTERVAL", "-1", "redis_flush_interval"),
        ("REDIS_FLUSH_INTERVAL", "soon", "redis_flush_interval"),
        ("REDIS_SSL_CERT_REQS", "optional", "redis_ssl_verify"),
        ("REDIS_KEY_PREFIX", "app*", "redis_key_prefix"),
        ("REDIS_KEY_PREFIX", "a[b]", "redis_key_prefix"),
        ("REDIS_SOCKET_TIMEOUT", "x", "redis_socket_timeout"),
    ],
)
def test_invalid_values_name_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, attribute: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        getattr(config, attribute)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "localhost:6379",
        "redis://h:port",
        "redis://h:70000",
        "redis://h/notadb",
        "unix://relative.sock",
    ],
)
def test_invalid_url_names_the_variable(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("PROMETHEUS_REDIS_URL", url)
    with pytest.raises(ValueError, match="PROMETHEUS_REDIS_URL"):
        config.redis_client_kwargs()
    with pytest.raises(ValueError, match="PROMETHEUS_REDIS_URL"):
        RedisClient.from_config()


def test_invalid_url_never_shows_the_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROMETHEUS_REDIS_URL", "redis://user:topsecret@host:badport/0")
    with pytest.raises(ValueError) as info:
        config.redis_client_kwargs()
    assert "topsecret" not in str(info.value)


def test_repr_never_shows_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_PASSWORD", "topsecret")
    clean_env.setenv("PROMETHEUS_REDIS_URL", "redis://u:topsecret2@h/0")
    assert "topsecret" not in repr(config)
    client = RedisClient.from_config()
    assert "topsecret" not in repr(client)


# --------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------


def test_parse_redis_url_tcp_with_user_password_db() -> None:
    assert _native.parse_redis_url("redis://user:pa%40ss@redis.example:6380/3") == {
        "host": "redis.example",
        "port": 6380,
        "unix_socket_path": "",
        "db": 3,
        "username": "user",
        "password": "pa@ss",
        "ssl": False,
        "ssl_ca_certs": "",
        "ssl_ca_path": "",
        "ssl_certfile": "",
        "ssl_keyfile": "",
        "ssl_verify": True,
    }


def test_parse_redis_url_defaults() -> None:
    parsed = _native.parse_redis_url("redis://redis.example")
    assert (
        parsed["host"],
        parsed["port"],
        parsed["db"],
        parsed["username"],
        parsed["password"],
        parsed["ssl"],
    ) == ("redis.example", 6379, 0, "", "", False)
    parsed = _native.parse_redis_url("redis://:only-password@h/")
    assert (parsed["username"], parsed["password"], parsed["db"]) == ("", "only-password", 0)
    parsed = _native.parse_redis_url("redis://[::1]:7000/4")
    assert (parsed["host"], parsed["port"], parsed["db"]) == ("::1", 7000, 4)


def test_parse_rediss_url_with_query() -> None:
    parsed = _native.parse_redis_url(
        "rediss://h:6390/1?ssl_ca_certs=/etc/ca%20dir/ca.crt&ssl_certfile=/c.crt"
        "&ssl_keyfile=/c.key&ssl_cert_reqs=none&socket_timeout=3"
    )
    assert parsed["ssl"] is True
    assert parsed["ssl_ca_certs"] == "/etc/ca dir/ca.crt"
    assert parsed["ssl_certfile"] == "/c.crt"
    assert parsed["ssl_keyfile"] == "/c.key"
    assert parsed["ssl_verify"] is False
    assert (parsed["host"], parsed["port"], parsed["db"]) == ("h", 6390, 1)
    assert _native.parse_redis_url("rediss://h")["ssl_verify"] is True


def test_parse_unix_url() -> None:
    parsed = _native.parse_redis_url("unix:///run/redis/redis.sock?db=1")
    assert parsed["unix_socket_path"] == "/run/redis/redis.sock"
    assert parsed["db"] == 1
    assert parsed["ssl"] is False
    parsed = _native.parse_redis_url("unix://u:pw@/run/r.sock?db=2")
    assert (parsed["unix_socket_path"], parsed["username"], parsed["password"], parsed["db"]) == (
        "/run/r.sock",
        "u",
        "pw",
        2,
    )


def test_client_kwargs_from_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_HOST", "h")
    clean_env.setenv("REDIS_PORT", "1234")
    clean_env.setenv("REDIS_DB", "5")
    clean_env.setenv("REDIS_USERNAME", "u")
    clean_env.setenv("REDIS_PASSWORD", "p")
    clean_env.setenv("REDIS_SSL", "true")
    clean_env.setenv("REDIS_SSL_CA_CERTS", "/ca")
    clean_env.setenv("REDIS_SSL_CERTFILE", "/cert")
    clean_env.setenv("REDIS_SSL_KEYFILE", "/key")
    clean_env.setenv("REDIS_SSL_CERT_REQS", "none")
    clean_env.setenv("REDIS_UNIX_SOCKET", "/sock")
    kw = config.redis_client_kwargs()
    assert {
        k: kw[k]
        for k in (
            "host",
            "port",
            "db",
            "username",
            "password",
            "ssl",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_verify",
            "unix_socket_path",
        )
    } == {
        "host": "h",
        "port": 1234,
        "db": 5,
        "username": "u",
        "password": "p",
        "ssl": True,
        "ssl_ca_certs": "/ca",
        "ssl_certfile": "/cert",
        "ssl_keyfile": "/key",
        "ssl_verify": False,
        "unix_socket_path": "/sock",
    }


def test_url_wins_over_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_HOST", "ignored")
    clean_env.setenv("REDIS_DB", "9")
    clean_env.setenv("PROMETHEUS_REDIS_URL", "redis://h:1/2")
    kw = config.redis_client_kwargs()
    assert (kw["host"], kw["port"], kw["db"]) == ("h", 1, 2)


# --------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------


def test_redis_db_variable_selects_the_database(
    clean_env: pytest.MonkeyPatch, redis_srv: RedisServer, rclient: RedisClient
) -> None:
    for name, value in redis_srv.env().items():
        clean_env.setenv(name, value)
    clean_env.setenv("REDIS_DB", "2")
    client = RedisClient.from_config()
    client.set("where", "db2")
    assert rclient.get("where") is None
    assert RedisClient(**redis_srv.client_kwargs(), db=2).get("where") == b"db2"


def test_url_db_selects_the_database(
    clean_env: pytest.MonkeyPatch, redis_srv: RedisServer, rclient: RedisClient
) -> None:
    clean_env.setenv("PROMETHEUS_REDIS_URL", f"redis://127.0.0.1:{redis_srv.port}/2")
    RedisClient.from_config().set("where", "url-db2")
    RedisClient.from_url(f"redis://127.0.0.1:{redis_srv.port}?db=3").set("where", "url-db3")
    assert rclient.get("where") is None
    assert RedisClient(**redis_srv.client_kwargs(), db=2).get("where") == b"url-db2"
    assert RedisClient(**redis_srv.client_kwargs(), db=3).get("where") == b"url-db3"


def test_url_with_acl_user(clean_env: pytest.MonkeyPatch, acl_server: RedisServer) -> None:
    url = f"redis://svc:p%40ss%3Aw%2Frd@127.0.0.1:{acl_server.port}/1"
    client = RedisClient.from_url(url)
    assert client.execute_command("ACL", "WHOAMI") == b"svc"
    client.set("k", "v")
    assert RedisClient(**acl_server.client_kwargs(), db=1).get("k") == b"v"
    with pytest.raises(RedisAuthenticationError):
        RedisClient.from_url(f"redis://svc:wrong@127.0.0.1:{acl_server.port}/1").ping()
    clean_env.setenv("PROMETHEUS_REDIS_URL", url)
    assert RedisClient.from_config().execute_command("ACL", "WHOAMI") == b"svc"


def test_variables_with_acl_user(clean_env: pytest.MonkeyPatch, acl_server: RedisServer) -> None:
    for name, value in acl_server.env().items():
        clean_env.setenv(name, value)
    assert RedisClient.from_config().execute_command("ACL", "WHOAMI") == b"svc"
    clean_env.setenv("REDIS_PASSWORD", "wrong")
    with pytest.raises(RedisAuthenticationError):
        RedisClient.from_config().ping()


def test_rediss_url_with_ca(tls_server: RedisServer) -> None:
    ca = tls_server.tls["ca.crt"]
    client = RedisClient.from_url(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={ca}")
    assert client.ping() is True
    with pytest.raises(RedisConnectionError):
        RedisClient.from_url(f"rediss://127.0.0.1:{tls_server.port}/0").ping()
    assert RedisClient.from_url(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_cert_reqs=none").ping()
    # overrides win over the URL
    assert RedisClient.from_url(f"rediss://127.0.0.1:{tls_server.port}", ssl_ca_certs=ca).ping()


def test_tls_from_variables_with_mutual_tls(
    clean_env: pytest.MonkeyPatch, tls_server: RedisServer
) -> None:
    for name, value in tls_server.env().items():
        clean_env.setenv(name, value)
    assert RedisClient.from_config().ping() is True
    admin = RedisClient(**tls_server.client_kwargs())
    admin.execute_command("CONFIG", "SET", "tls-auth-clients", "yes")
    try:
        with pytest.raises(RedisConnectionError):
            RedisClient.from_config().ping()
        clean_env.setenv("REDIS_SSL_CERTFILE", tls_server.tls["client.crt"])
        clean_env.setenv("REDIS_SSL_KEYFILE", tls_server.tls["client.key"])
        assert RedisClient.from_config().ping() is True
        url = (
            f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={tls_server.tls['ca.crt']}"
            f"&ssl_certfile={tls_server.tls['client.crt']}&ssl_keyfile={tls_server.tls['client.key']}"
        )
        assert RedisClient.from_url(url).ping() is True
    finally:
        admin.execute_command("CONFIG", "SET", "tls-auth-clients", "optional")


def test_unix_url_and_variables(clean_env: pytest.MonkeyPatch, unix_server: RedisServer) -> None:
    client = RedisClient.from_url(f"unix://:unixpw@{unix_server.unix_socket}?db=1")
    client.set("k", "unix-db1")
    tcp_db1 = RedisClient(host="127.0.0.1", port=unix_server.port, password="unixpw", db=1)
    assert tcp_db1.get("k") == b"unix-db1"
    assert RedisClient(host="127.0.0.1", port=unix_server.port, password="unixpw").get("k") is None
    clean_env.setenv(
        "PROMETHEUS_REDIS_URL", f"unix://{unix_server.unix_socket}?db=1&password=unixpw"
    )
    assert RedisClient.from_config().get("k") == b"unix-db1"
    clean_env.delenv("PROMETHEUS_REDIS_URL")
    for name, value in unix_server.env().items():
        clean_env.setenv(name, value)
    clean_env.setenv("REDIS_PORT", "1")  # unused: the socket wins
    assert RedisClient.from_config().ping() is True
    assert "unix:" in RedisClient.from_config().native.description


def test_collector_client_from_url(clean_env: pytest.MonkeyPatch, redis_srv: RedisServer) -> None:
    """Without a client the collector takes PROMETHEUS_REDIS_URL."""
    from gunicorn_prometheus_exporter.backend import RedisStorageDict, redis_key

    db4 = RedisClient(**redis_srv.client_kwargs(), db=4)
    store = RedisStorageDict(db4, "gunicorn", "counter", process="1@h")
    store.write_value(redis_key("jobs", "jobs_total", [], [], "Jobs."), 3.0)
    clean_env.setenv("PROMETHEUS_REDIS_URL", f"redis://127.0.0.1:{redis_srv.port}/4")
    body = RedisMultiProcessCollector(None).render()
    assert body == b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 3.0\n"
    clean_env.setenv("PROMETHEUS_REDIS_URL", f"redis://127.0.0.1:{redis_srv.port}/5")
    assert RedisMultiProcessCollector(None).render() == b""


class _FakeRedisPy:
    """What RedisClient.wrap reads of a redis-py client: its connection pool's
    settings (redis-py itself is not needed)."""

    def __init__(self, connection_class_name: str = "Connection", **kwargs) -> None:
        self.connection_pool = type(
            "Pool",
            (),
            {
                "connection_kwargs": kwargs,
                "connection_class": type(connection_class_name, (), {}),
            },
        )()


def test_wrap_a_redis_py_client(redis_srv: RedisServer) -> None:
    fake = _FakeRedisPy(host="127.0.0.1", port=redis_srv.port, db=3, socket_timeout=None)
    client = RedisClient.wrap(fake)
    assert isinstance(client, RedisClient)
    client.set("wrapped", "1")
    assert RedisClient(**redis_srv.client_kwargs(), db=3).get("wrapped") == b"1"
    assert RedisClient.wrap(client) is client
    native = RedisClient.wrap(client.native)
    assert native.native is client.native


def test_wrap_a_redis_py_tls_client(tls_server: RedisServer) -> None:
    fake = _FakeRedisPy(
        "SSLConnection",
        host="127.0.0.1",
        port=tls_server.port,
        ssl_ca_certs=tls_server.tls["ca.crt"],
    )
    assert RedisClient.wrap(fake).ping() is True
    assert "(TLS)" in RedisClient.wrap(fake).native.description


def test_collector_accepts_a_redis_py_client(redis_srv: RedisServer) -> None:
    from gunicorn_prometheus_exporter.backend import RedisStorageDict, redis_key

    RedisStorageDict(
        RedisClient(**redis_srv.client_kwargs()), "gunicorn", "counter", process="1@h"
    )[redis_key("jobs", "jobs_total", [], [], "Jobs.")] = 2.0
    fake = _FakeRedisPy(host="127.0.0.1", port=redis_srv.port)
    assert RedisMultiProcessCollector(None, fake).render() == (
        b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 2.0\n"
    )


def test_with_real_redis_py(redis_srv: RedisServer) -> None:
    redis = pytest.importorskip("redis")
    client = RedisClient.wrap(redis.Redis(host="127.0.0.1", port=redis_srv.port, db=1))
    client.set("k", "v")
    assert RedisClient(**redis_srv.client_kwargs(), db=1).get("k") == b"v"
