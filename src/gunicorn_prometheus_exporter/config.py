"""Configuration: ``ExporterConfig`` and its singleton ``config``.

Every setting is read from the environment when it is used, so that a
Gunicorn config file or a test can set variables at any time before. Names,
defaults, parsing and validation come from the settings table the agent
reads too (core/src/settings.cpp): invalid values raise ``ValueError``
naming the variable. Booleans accept 1/0, true/false, yes/no, on/off (any
case).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from enum import Enum
from typing import Any

from ._logging import logger

_FALSE = {"0", "false", "no", "off", ""}  # as the table reads booleans (for YAML's ``enabled``)


def read_setting(name: str) -> Any:
    """The variable ``name`` as the settings table reads it (one table, in
    core/src/settings.cpp, which the agent reads too): its default when unset,
    ValueError naming the variable and the value when invalid."""
    from . import _native

    return _native.read_setting(name, os.environ.get(name))


class ExporterConfig:
    """The exporter's settings, from environment variables."""

    # The variables' names, as 0.2.x's class spelled them.
    ENV_PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
    ENV_PROMETHEUS_METRICS_PORT = "PROMETHEUS_METRICS_PORT"
    ENV_PROMETHEUS_BIND_ADDRESS = "PROMETHEUS_BIND_ADDRESS"
    ENV_GUNICORN_WORKERS = "GUNICORN_WORKERS"
    ENV_GUNICORN_TIMEOUT = "GUNICORN_TIMEOUT"
    ENV_GUNICORN_KEEPALIVE = "GUNICORN_KEEPALIVE"
    ENV_REDIS_ENABLED = "REDIS_ENABLED"
    ENV_REDIS_HOST = "REDIS_HOST"
    ENV_REDIS_PORT = "REDIS_PORT"
    ENV_REDIS_DB = "REDIS_DB"
    ENV_REDIS_PASSWORD = "REDIS_PASSWORD"
    ENV_REDIS_KEY_PREFIX = "REDIS_KEY_PREFIX"
    ENV_REDIS_TTL_SECONDS = "REDIS_TTL_SECONDS"
    ENV_REDIS_TTL_DISABLED = "REDIS_TTL_DISABLED"
    ENV_SIDECAR_MODE = "SIDECAR_MODE"
    ENV_CLEANUP_DB_FILES = "CLEANUP_DB_FILES"
    ENV_PROMETHEUS_SSL_CERTFILE = "PROMETHEUS_SSL_CERTFILE"
    ENV_PROMETHEUS_SSL_KEYFILE = "PROMETHEUS_SSL_KEYFILE"
    ENV_PROMETHEUS_SSL_CLIENT_CAFILE = "PROMETHEUS_SSL_CLIENT_CAFILE"
    ENV_PROMETHEUS_SSL_CLIENT_CAPATH = "PROMETHEUS_SSL_CLIENT_CAPATH"
    ENV_PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED = "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED"

    # -- the /metrics endpoint (served by the agent) --
    @property
    def prometheus_bind_address(self) -> str:
        return str(read_setting("PROMETHEUS_BIND_ADDRESS"))

    @property
    def prometheus_metrics_port(self) -> int:
        return int(read_setting("PROMETHEUS_METRICS_PORT"))

    @property
    def prometheus_multiproc_dir(self) -> str | None:
        return read_setting("PROMETHEUS_MULTIPROC_DIR") or None

    @property
    def prometheus_ssl_certfile(self) -> str:
        return str(read_setting("PROMETHEUS_SSL_CERTFILE"))

    @property
    def prometheus_ssl_keyfile(self) -> str:
        return str(read_setting("PROMETHEUS_SSL_KEYFILE"))

    @property
    def prometheus_ssl_client_cafile(self) -> str:
        return str(read_setting("PROMETHEUS_SSL_CLIENT_CAFILE"))

    @property
    def prometheus_ssl_client_capath(self) -> str:
        return str(read_setting("PROMETHEUS_SSL_CLIENT_CAPATH"))

    @property
    def prometheus_ssl_client_auth_required(self) -> bool:
        return bool(read_setting("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED"))

    @property
    def cleanup_db_files(self) -> bool:
        """Remove files of an earlier run at start (never during a USR2 upgrade)."""
        return bool(read_setting("CLEANUP_DB_FILES"))

    @property
    def config_file(self) -> str | None:
        """A YAML configuration file to apply at start."""
        return read_setting("GUNICORN_PROMETHEUS_CONFIG") or None

    @property
    def resource_sample_interval(self) -> float:
        """Seconds between two refreshes of the worker resource gauges."""
        return float(read_setting("GUNICORN_PROMETHEUS_SAMPLE_INTERVAL"))

    @property
    def status_label(self) -> str:
        """The requests counter's status label: "class" (2xx) or "code" (200)."""
        return str(read_setting("GUNICORN_PROMETHEUS_STATUS_LABEL"))

    @property
    def prometheus_ssl_enabled(self) -> bool:
        """Whether /metrics is served over HTTPS."""
        return bool(self.prometheus_ssl_certfile and self.prometheus_ssl_keyfile)

    # -- Gunicorn settings named by 0.2.x's YAML schema (gunicorn_config applies them) --
    @property
    def gunicorn_workers(self) -> int:
        return int(read_setting("GUNICORN_WORKERS"))

    @property
    def gunicorn_timeout(self) -> int:
        return int(read_setting("GUNICORN_TIMEOUT"))

    @property
    def gunicorn_keepalive(self) -> int:
        return int(read_setting("GUNICORN_KEEPALIVE"))

    def validate(self) -> bool:
        """Reads every setting once: the first invalid one raises ValueError
        naming its variable (at start, not at the first scrape). True when
        all are valid (0.2.x returned False and logged instead of raising)."""
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name), property):
                getattr(self, name)
        if bool(self.prometheus_ssl_certfile) != bool(self.prometheus_ssl_keyfile):
            raise ValueError("PROMETHEUS_SSL_CERTFILE and PROMETHEUS_SSL_KEYFILE go together")
        if self.prometheus_ssl_client_auth_required and not (
            self.prometheus_ssl_client_cafile or self.prometheus_ssl_client_capath
        ):
            raise ValueError(
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED needs PROMETHEUS_SSL_CLIENT_CAFILE or _CAPATH"
            )
        return True

    # -- Redis (the seed's variables) --
    @property
    def redis_enabled(self) -> bool:
        return bool(read_setting("REDIS_ENABLED"))

    @property
    def redis_host(self) -> str:
        return str(read_setting("REDIS_HOST"))

    @property
    def redis_port(self) -> int:
        return int(read_setting("REDIS_PORT"))

    @property
    def redis_db(self) -> int:
        return int(read_setting("REDIS_DB"))

    @property
    def redis_key_prefix(self) -> str:
        return str(read_setting("REDIS_KEY_PREFIX"))  # no glob characters: the table refuses them

    @property
    def redis_layout(self) -> str:
        return str(read_setting("REDIS_LAYOUT"))  # instance or series: the table checks it

    @property
    def redis_ttl_seconds(self) -> int:
        return int(read_setting("REDIS_TTL_SECONDS"))

    @property
    def redis_ttl_disabled(self) -> bool:
        return bool(read_setting("REDIS_TTL_DISABLED")) or self.redis_ttl_seconds == 0

    @property
    def redis_password(self) -> str | None:
        return read_setting("REDIS_PASSWORD") or None

    @property
    def redis_ssl(self) -> bool:
        return bool(read_setting("REDIS_SSL"))

    # -- Redis (additions) --
    @property
    def redis_username(self) -> str | None:
        return read_setting("REDIS_USERNAME") or None

    @property
    def redis_url(self) -> str | None:
        return read_setting("PROMETHEUS_REDIS_URL") or None

    @property
    def redis_ssl_ca_certs(self) -> str:
        return str(read_setting("REDIS_SSL_CA_CERTS"))

    @property
    def redis_ssl_ca_path(self) -> str:
        return str(read_setting("REDIS_SSL_CA_PATH"))

    @property
    def redis_ssl_certfile(self) -> str:
        return str(read_setting("REDIS_SSL_CERTFILE"))

    @property
    def redis_ssl_keyfile(self) -> str:
        return str(read_setting("REDIS_SSL_KEYFILE"))

    @property
    def redis_ssl_verify(self) -> bool:
        return (
            read_setting("REDIS_SSL_CERT_REQS") == "required"
        )  # the table allows required or none

    @property
    def redis_unix_socket(self) -> str:
        return str(read_setting("REDIS_UNIX_SOCKET"))

    @property
    def redis_socket_timeout(self) -> float:
        return float(read_setting("REDIS_SOCKET_TIMEOUT"))

    @property
    def redis_connect_timeout(self) -> float:
        return float(read_setting("REDIS_CONNECT_TIMEOUT"))

    @property
    def redis_max_reply_bytes(self) -> int:
        """The largest reply read from Redis; a larger one is refused."""
        return int(read_setting("REDIS_MAX_REPLY_BYTES"))

    @property
    def redis_sentinels(self) -> str:
        """Redis Sentinel addresses, "host:port,host:port"; empty: no Sentinel."""
        return str(read_setting("REDIS_SENTINELS"))

    @property
    def redis_sentinel_master(self) -> str:
        return str(read_setting("REDIS_SENTINEL_MASTER"))

    @property
    def redis_sentinel_password(self) -> str:
        return str(read_setting("REDIS_SENTINEL_PASSWORD"))

    @property
    def redis_cluster(self) -> bool:
        """Redis Cluster: the configured server is a seed node."""
        return bool(read_setting("REDIS_CLUSTER"))

    @property
    def redis_cluster_nodes(self) -> str:
        """Redis Cluster seed nodes, "host:port,host:port"; empty: REDIS_CLUSTER decides."""
        return str(read_setting("REDIS_CLUSTER_NODES"))

    @property
    def redis_instance_id(self) -> str:
        """Identifies this host or pod in Redis keys; the hostname by default."""
        return str(read_setting("REDIS_INSTANCE_ID")) or socket.gethostname()

    @property
    def redis_flush_interval(self) -> float:
        """Seconds between two mirror passes to Redis."""
        return float(read_setting("REDIS_FLUSH_INTERVAL"))

    def redis_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the native Redis client: PROMETHEUS_REDIS_URL
        when set, otherwise the REDIS_* variables. The client checks that
        sentinels and a master name come together (as the agent does)."""
        from . import _native

        common = {
            "socket_timeout": self.redis_socket_timeout,
            "socket_connect_timeout": self.redis_connect_timeout,
            "max_reply_bytes": self.redis_max_reply_bytes,
        }
        if self.redis_url:
            try:
                parsed = _native.parse_redis_url(self.redis_url)
            except ValueError as e:
                raise ValueError(f"PROMETHEUS_REDIS_URL: {e}") from None
            if parsed.get("sentinels"):  # as the agent: the URL's password, else the variable's
                parsed["sentinel_password"] = (
                    parsed["sentinel_password"] or self.redis_sentinel_password
                )
            # As the agent: REDIS_CLUSTER makes the URL's server a seed node.
            return {**parsed, "cluster": self.redis_cluster, **common}
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
            "sentinels": self.redis_sentinels,
            "sentinel_master": self.redis_sentinel_master,
            "sentinel_password": self.redis_sentinel_password,
            "cluster": self.redis_cluster,
            "cluster_nodes": self.redis_cluster_nodes,
            **common,
        }

    # -- 0.2.x's summaries --
    @property
    def is_sidecar(self) -> bool:
        return bool(read_setting("SIDECAR_MODE"))

    def get_prometheus_config(self) -> dict[str, Any]:
        return {
            "bind_address": self.prometheus_bind_address,
            "port": self.prometheus_metrics_port,
            "multiproc_dir": self.prometheus_multiproc_dir,
        }

    def get_gunicorn_config(self) -> dict[str, Any]:
        if self.is_sidecar:
            return {}
        return {
            "workers": self.gunicorn_workers,
            "timeout": self.gunicorn_timeout,
            "keepalive": self.gunicorn_keepalive,
        }

    def print_config(self) -> None:
        """Log the settings (never secrets)."""
        for key, value in {
            **self.get_prometheus_config(),
            **self.get_gunicorn_config(),
            "redis_enabled": self.redis_enabled,
        }.items():
            logger.info("%s: %s", key, value)

    def __repr__(self) -> str:  # never shows secrets
        return f"ExporterConfig(redis_enabled={self.redis_enabled}, redis_key_prefix={self.redis_key_prefix!r})"


config = ExporterConfig()


# -- 0.2.x's configuration lifecycle API, over the one ``config`` above --


class ConfigState(Enum):
    UNINITIALIZED = "uninitialized"
    INITIALIZING = "initializing"
    INITIALIZED = "initialized"
    VALIDATING = "validating"
    UPDATING = "updating"
    CLEANUP = "cleanup"
    ERROR = "error"


class ConfigManager:
    """0.2.x's lifecycle around the settings: ``initialize`` (optionally from
    a YAML file and variable overrides) validates them, ``get_config``
    returns the validated ``ExporterConfig``. Settings are read from the
    environment on use either way."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = ConfigState.UNINITIALIZED
        self._config: ExporterConfig | None = None
        self._errors: list[str] = []
        self._initialization_time: float | None = None

    @property
    def state(self) -> ConfigState:
        return self._state

    @property
    def is_initialized(self) -> bool:
        return self._state is ConfigState.INITIALIZED

    @property
    def validation_errors(self) -> list[str]:
        return list(self._errors)

    def initialize(self, config_file: str | None = None, **overrides: Any) -> None:
        """Raises RuntimeError when initialized already, ValueError naming the
        variable when a setting is invalid."""
        with self._lock:
            if self._state in (ConfigState.INITIALIZED, ConfigState.INITIALIZING):
                raise RuntimeError(f"Configuration already {self._state.value}")
            self._state = ConfigState.INITIALIZING
            try:
                if config_file:
                    load_yaml_config(config_file)
                for name, value in overrides.items():
                    if value is not None:
                        os.environ[name] = str(value)
                self._validate()
            except Exception:
                self._state = ConfigState.ERROR
                raise
            self._config = config
            self._initialization_time = time.time()
            self._state = ConfigState.INITIALIZED

    def _validate(self) -> None:
        self._errors.clear()
        try:
            config.validate()
        except ValueError as e:
            self._errors.append(str(e))
            raise

    def get_config(self) -> ExporterConfig:
        with self._lock:
            if self._config is None or self._state is not ConfigState.INITIALIZED:
                raise RuntimeError(f"Configuration not ready (state: {self._state.value})")
            return self._config

    def update_config(self, **overrides: Any) -> None:
        with self._lock:
            self.get_config()
            for name, value in overrides.items():
                if value is not None:
                    os.environ[name] = str(value)
            self._validate()

    def reload_config(self) -> None:
        with self._lock:
            self.get_config()
            self._validate()

    def cleanup(self) -> None:
        with self._lock:
            self.reset()

    def reset(self) -> None:
        with self._lock:
            self._config = None
            self._errors.clear()
            self._initialization_time = None
            self._state = ConfigState.UNINITIALIZED

    def get_config_summary(self) -> dict[str, Any]:
        with self._lock:
            if self._config is None:
                return {"state": self._state.value, "initialized": False}
            return {
                "state": self._state.value,
                "initialized": True,
                "initialization_time": self._initialization_time,
                "validation_errors": self.validation_errors,
                "prometheus_port": config.prometheus_metrics_port,
                "redis_enabled": config.redis_enabled,
                "gunicorn_workers": config.gunicorn_workers,
            }

    def health_check(self) -> dict[str, Any]:
        with self._lock:
            errors = (
                []
                if self.is_initialized
                else [f"Configuration not ready (state: {self._state.value})"]
            )
            return {"healthy": not errors, "state": self._state.value, "errors": errors}


_manager: ConfigManager | None = None  # the process-wide manager of 0.2.x's functions
_manager_lock = threading.Lock()


def get_config_manager() -> ConfigManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = ConfigManager()
        return _manager


def initialize_config(config_file: str | None = None, **overrides: Any) -> None:
    """0.2.x: validate the settings once (RuntimeError if done already)."""
    get_config_manager().initialize(config_file, **overrides)


def get_config() -> ExporterConfig:
    """0.2.x: the validated settings, initialized on first use."""
    manager = get_config_manager()
    with manager._lock:
        if manager.state is ConfigState.UNINITIALIZED:
            manager.initialize()
    return manager.get_config()


def cleanup_config() -> None:
    global _manager
    with _manager_lock:
        if _manager is not None:
            _manager.cleanup()
            _manager = None


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

    from . import directory

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
        if section == "prometheus" and "ssl" in body:  # where 0.2.x reads ssl from
            body = dict(body)
            ssl = body.pop("ssl")
            if not isinstance(ssl, dict):
                raise ValueError(f"{path}: exporter.prometheus.ssl must be a mapping")
            values.update(_section_values(path, "ssl", ssl))
        values.update(_section_values(path, section, body))
    private = directory.is_private(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    for name, value in values.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if name == "PROMETHEUS_MULTIPROC_DIR" and private:
            # Our private directory was made before this file was read: the
            # file's directory is the user's choice, the environment's was ours.
            directory.replace_private_directory(text)
            directory.prepare_master()
        elif name not in os.environ:
            os.environ[name] = text


def _section_values(path: str, section: str, body: dict[str, Any]) -> dict[str, Any]:
    """The variables of one section. As in 0.2.x, the ``ssl`` and ``redis``
    sections apply only when they say ``enabled: true``."""
    variables = {
        _yaml_variable(path, section, key): value for key, value in body.items() if key != "enabled"
    }
    if section not in ("ssl", "redis"):
        return variables
    enabled = body.get("enabled", False)
    if not enabled or str(enabled).strip().lower() in _FALSE:
        return {}
    return {**variables, "REDIS_ENABLED": True} if section == "redis" else variables


def _yaml_variable(path: str, section: str, key: str) -> str:
    name = _YAML_SETTINGS.get((section, key))
    if name is None:
        raise ValueError(f"{path}: unknown setting exporter.{section}.{key}")
    return name
