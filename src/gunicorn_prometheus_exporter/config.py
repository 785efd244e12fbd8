"""Configuration: ``ExporterConfig`` and its singleton ``config``.

Every setting is read from the environment when it is used, so that a
Gunicorn config file or a test can set variables at any time before. Invalid
values raise ``ValueError`` naming the variable. Booleans accept 1/0,
true/false, yes/no, on/off (any case).
"""

from __future__ import annotations

import os
import socket
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def parse_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} must be at most {maximum}")
    return value


def parse_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not value > minimum:
        raise ValueError(f"{name}={value} must be greater than {minimum}")
    return value


def _text(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


class ExporterConfig:
    """The exporter's settings, from environment variables."""

    # -- the /metrics endpoint (served by the agent) --
    @property
    def prometheus_bind_address(self) -> str:
        return _text("PROMETHEUS_BIND_ADDRESS", "0.0.0.0") or "0.0.0.0"

    @property
    def prometheus_metrics_port(self) -> int:
        return parse_int("PROMETHEUS_METRICS_PORT", 9091, 1, 65535)

    @property
    def prometheus_multiproc_dir(self) -> str | None:
        return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

    @property
    def prometheus_ssl_certfile(self) -> str:
        return self._existing_file("PROMETHEUS_SSL_CERTFILE")

    @property
    def prometheus_ssl_keyfile(self) -> str:
        return self._existing_file("PROMETHEUS_SSL_KEYFILE")

    @property
    def prometheus_ssl_client_cafile(self) -> str:
        return self._existing_file("PROMETHEUS_SSL_CLIENT_CAFILE")

    @property
    def prometheus_ssl_client_capath(self) -> str:
        return _text("PROMETHEUS_SSL_CLIENT_CAPATH")

    @property
    def prometheus_ssl_client_auth_required(self) -> bool:
        return parse_bool("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", False)

    @property
    def resource_sample_interval(self) -> float:
        """Seconds between two refreshes of the worker resource gauges."""
        return parse_float("GUNICORN_PROMETHEUS_SAMPLE_INTERVAL", 5.0)

    @staticmethod
    def _existing_file(name: str) -> str:
        path = _text(name)
        if path and not os.path.isfile(path):
            raise ValueError(f"{name}={path!r} is not a file")
        return path

    def validate(self) -> None:
        """Reads every setting once: the first invalid one raises ValueError
        naming its variable (at start, not at the first scrape)."""
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), property):
                getattr(self, name)
        if bool(self.prometheus_ssl_certfile) != bool(self.prometheus_ssl_keyfile):
            raise ValueError("PROMETHEUS_SSL_CERTFILE and PROMETHEUS_SSL_KEYFILE go together")
        if self.prometheus_ssl_client_auth_required and not (
                self.prometheus_ssl_client_cafile or self.prometheus_ssl_client_capath):
            raise ValueError("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED needs PROMETHEUS_SSL_CLIENT_CAFILE or _CAPATH")

    # -- Redis (the seed's variables) --
    @property
    def redis_enabled(self) -> bool:
        return parse_bool("REDIS_ENABLED", False)

    @property
    def redis_host(self) -> str:
        return _text("REDIS_HOST", "localhost") or "localhost"

    @property
    def redis_port(self) -> int:
        return parse_int("REDIS_PORT", 6379, 1, 65535)

    @property
    def redis_db(self) -> int:
        return parse_int("REDIS_DB", 0, 0)

    @property
    def redis_key_prefix(self) -> str:
        prefix = _text("REDIS_KEY_PREFIX", "gunicorn") or "gunicorn"
        if any(c in prefix for c in "*?[]\\"):
            raise ValueError(f"REDIS_KEY_PREFIX={prefix!r} must not contain * ? [ ] or \\")
        return prefix

    @property
    def redis_ttl_seconds(self) -> int:
        return parse_int("REDIS_TTL_SECONDS", 300, 0)

    @property
    def redis_ttl_disabled(self) -> bool:
        return parse_bool("REDIS_TTL_DISABLED", False) or self.redis_ttl_seconds == 0

    @property
    def redis_password(self) -> str | None:
        return os.environ.get("REDIS_PASSWORD") or None

    @property
    def redis_ssl(self) -> bool:
        return parse_bool("REDIS_SSL", False)

    # -- Redis (additions) --
    @property
    def redis_username(self) -> str | None:
        return os.environ.get("REDIS_USERNAME") or None

    @property
    def redis_url(self) -> str | None:
        return os.environ.get("PROMETHEUS_REDIS_URL") or None

    @property
    def redis_ssl_ca_certs(self) -> str:
        return _text("REDIS_SSL_CA_CERTS")

    @property
    def redis_ssl_ca_path(self) -> str:
        return _text("REDIS_SSL_CA_PATH")

    @property
    def redis_ssl_certfile(self) -> str:
        return _text("REDIS_SSL_CERTFILE")

    @property
    def redis_ssl_keyfile(self) -> str:
        return _text("REDIS_SSL_KEYFILE")

    @property
    def redis_ssl_verify(self) -> bool:
        raw = _text("REDIS_SSL_CERT_REQS", "required").strip().lower()
        if raw not in ("required", "none"):
            raise ValueError(f"REDIS_SSL_CERT_REQS={raw!r} must be 'required' or 'none'")
        return raw == "required"

    @property
    def redis_unix_socket(self) -> str:
        return _text("REDIS_UNIX_SOCKET")

    @property
    def redis_socket_timeout(self) -> float:
        return parse_float("REDIS_SOCKET_TIMEOUT", 5.0)

    @property
    def redis_connect_timeout(self) -> float:
        return parse_float("REDIS_CONNECT_TIMEOUT", 5.0)

    @property
    def redis_instance_id(self) -> str:
        """Identifies this host or pod in Redis keys; the hostname by default."""
        return _text("REDIS_INSTANCE_ID") or socket.gethostname()

    @property
    def redis_flush_interval(self) -> float:
        """Seconds between two mirror passes to Redis."""
        return parse_float("REDIS_FLUSH_INTERVAL", 1.0)

    def redis_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the native Redis client: PROMETHEUS_REDIS_URL
        when set, otherwise the REDIS_* variables."""
        from . import _native

        common = {
            "socket_timeout": self.redis_socket_timeout,
            "socket_connect_timeout": self.redis_connect_timeout,
        }
        if self.redis_url:
            try:
                parsed = _native.parse_redis_url(self.redis_url)
            except ValueError as e:
                raise ValueError(f"PROMETHEUS_REDIS_URL: {e}") from None
            return {**parsed, **common}
        return {
            "host": self.redis_host,
            "port": self.redis_port,
            "db": self.redis_db,
            "username": self.redis_username or "",
            "password": self.redis_password or "",
            "unix_socket_path": self.redis_unix_socket,
            "ssl": self.redis_ssl,
            "ssl_ca_certs": self.redis_ssl_ca_certs,
            "ssl_ca_path": self.redis_ssl_ca_path,
            "ssl_certfile": self.redis_ssl_certfile,
            "ssl_keyfile": self.redis_ssl_keyfile,
            "ssl_verify": self.redis_ssl_verify,
            **common,
        }

    def __repr__(self) -> str:  # never shows secrets
        return f"ExporterConfig(redis_enabled={self.redis_enabled}, redis_key_prefix={self.redis_key_prefix!r})"


config = ExporterConfig()
