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
    def cleanup_db_files(self) -> bool:
        """Remove files of an earlier run at start (never during a USR2 upgrade)."""
        return parse_bool("CLEANUP_DB_FILES", True)

    @property
    def config_file(self) -> str | None:
        """A YAML configuration file to apply at start."""
        return os.environ.get("GUNICORN_PROMETHEUS_CONFIG") or None

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


# YAML file (the schema of gunicorn-prometheus-exporter 0.2.x) -> variables.
_YAML_SETTINGS = {
    ("prometheus", "metrics_port"): "PROMETHEUS_METRICS_PORT",
    ("prometheus", "bind_address"): "PROMETHEUS_BIND_ADDRESS",
    ("prometheus", "multiproc_dir"): "PROMETHEUS_MULTIPROC_DIR",
    ("ssl", "certfile"): "PROMETHEUS_SSL_CERTFILE",
    ("ssl", "keyfile"): "PROMETHEUS_SSL_KEYFILE",
    ("ssl", "client_cafile"): "PROMETHEUS_SSL_CLIENT_CAFILE",
    ("ssl", "client_capath"): "PROMETHEUS_SSL_CLIENT_CAPATH",
    ("ssl", "client_auth_required"): "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED",
    ("gunicorn", "workers"): "GUNICORN_WORKERS",
    ("gunicorn", "timeout"): "GUNICORN_TIMEOUT",
    ("gunicorn", "keepalive"): "GUNICORN_KEEPALIVE",
    ("redis", "enabled"): "REDIS_ENABLED",
    ("redis", "host"): "REDIS_HOST",
    ("redis", "port"): "REDIS_PORT",
    ("redis", "db"): "REDIS_DB",
    ("redis", "password"): "REDIS_PASSWORD",
    ("redis", "username"): "REDIS_USERNAME",
    ("redis", "key_prefix"): "REDIS_KEY_PREFIX",
    ("redis", "ttl_seconds"): "REDIS_TTL_SECONDS",
    ("redis", "ttl_disabled"): "REDIS_TTL_DISABLED",
    ("redis", "ssl"): "REDIS_SSL",
    ("redis", "instance_id"): "REDIS_INSTANCE_ID",
    ("cleanup", "db_files"): "CLEANUP_DB_FILES",
}


def load_yaml_config(path: str) -> None:
    """Apply a YAML configuration file with the ``exporter:`` schema
    (``prometheus``, ``gunicorn``, ``redis``, ``ssl``, ``cleanup``; ``ssl`` may
    also sit under ``prometheus``). Variables already set in the environment
    win. Raises ValueError naming the file and the key for anything unknown."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f) or {}
    except OSError as e:
        raise ValueError(f"cannot read configuration file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    root = document.get("exporter") if isinstance(document, dict) else None
    if not isinstance(root, dict):
        raise ValueError(f"{path}: the configuration must sit under a top-level 'exporter:' key")
    values: dict[str, Any] = {}
    for section, body in root.items():
        if not isinstance(body, dict):
            raise ValueError(f"{path}: exporter.{section} must be a mapping")
        for key, value in body.items():
            if section == "prometheus" and key == "ssl" and isinstance(value, dict):
                for ssl_key, ssl_value in value.items():
                    if ssl_key != "enabled":
                        values[_yaml_variable(path, "ssl", ssl_key)] = ssl_value
                continue
            if section == "ssl" and key == "enabled":
                continue
            values[_yaml_variable(path, section, key)] = value
    for name, value in values.items():
        if value is None or name in os.environ:
            continue
        os.environ[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)


def _yaml_variable(path: str, section: str, key: str) -> str:
    name = _YAML_SETTINGS.get((section, key))
    if name is None:
        raise ValueError(f"{path}: unknown setting exporter.{section}.{key}")
    return name
