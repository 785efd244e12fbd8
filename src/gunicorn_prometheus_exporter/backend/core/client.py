"""The native Redis client behind a redis-py-like interface, and
``RedisStorageDict``, a mapping over one process's series in Redis."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol

from ... import _native
from ..._logging import log_warnings
from ...config import config


class RedisClientProtocol(Protocol):
    """What the backend needs of a Redis client."""

    def ping(self) -> bool: ...

    def hget(self, name: str | bytes, key: str) -> bytes | None: ...

    def hset(
        self,
        name: str | bytes,
        key: str | None = None,
        value: Any = None,
        mapping: Mapping[str, Any] | None = None,
    ) -> int: ...

    def hgetall(self, name: str | bytes) -> dict[bytes, bytes]: ...

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterable[bytes]: ...

    def delete(self, *keys: str | bytes) -> int: ...

    def expire(self, name: str | bytes, time: int) -> bool: ...


class StorageDictProtocol(Protocol):
    """A store of (value, timestamp) by series key."""

    def read_value(self, key: str) -> tuple[float, float]: ...

    def write_value(self, key: str, value: float, timestamp: float | None = None) -> None: ...


class RedisClient:
    """A redis-py-like client on the native connection (TCP, Unix socket or
    TLS; AUTH with ACL user; reconnect with backoff). Bulk replies are bytes,
    as redis-py without ``decode_responses``. Errors are
    ``RedisConnectionError``, ``RedisTimeoutError``,
    ``RedisAuthenticationError`` and ``RedisResponseError``."""

    def __init__(self, **kwargs: Any) -> None:
        self.native = _native.RedisClient(**kwargs)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisClient:
        """redis://, rediss://, unix:// or redis+sentinel:// URL (as PROMETHEUS_REDIS_URL)."""
        return cls(**{**_native.parse_redis_url(url), **overrides})

    @classmethod
    def from_config(cls) -> RedisClient:
        """From PROMETHEUS_REDIS_URL, or the REDIS_* variables."""
        return cls(**config.redis_client_kwargs())

    @classmethod
    def wrap(cls, client: Any) -> RedisClient:
        """Ours as it is; a redis-py client by its connection settings."""
        if isinstance(client, RedisClient):
            return client
        if isinstance(client, _native.RedisClient):
            wrapped = cls.__new__(cls)
            wrapped.native = client
            return wrapped
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            kw = dict(pool.connection_kwargs)

            def value(key: str, variable: str) -> Any:
                """redis-py's setting, else the table's default for ``variable``."""
                given = kw.get(key)
                return given if given not in (None, "") else _native.read_setting(variable, None)

            # redis-py also takes ssl.VerifyMode, and None for CERT_NONE; a client
            # verifies the same with optional as with required.
            reqs = kw.get("ssl_cert_reqs", "required")
            reqs = {
                None: "none",
                0: "none",
                1: "required",
                2: "required",
                "optional": "required",
            }.get(reqs, reqs)
            ssl = (
                "ssl_certfile" in kw
                or "ssl_ca_certs" in kw
                or pool.connection_class.__name__ == "SSLConnection"
            )
            return cls(
                host=str(value("host", "REDIS_HOST")),
                port=int(value("port", "REDIS_PORT")),
                db=int(value("db", "REDIS_DB")),
                username=kw.get("username") or "",
                password=kw.get("password") or "",
                unix_socket_path=kw.get("path") or "",
                ssl=ssl,
                ssl_ca_certs=kw.get("ssl_ca_certs") or "",
                ssl_certfile=kw.get("ssl_certfile") or "",
                ssl_keyfile=kw.get("ssl_keyfile") or "",
                ssl_verify=_native.read_setting("REDIS_SSL_CERT_REQS", str(reqs)) == "required",
                socket_timeout=float(value("socket_timeout", "REDIS_SOCKET_TIMEOUT")),
                socket_connect_timeout=float(
                    value("socket_connect_timeout", "REDIS_CONNECT_TIMEOUT")
                ),
            )
        raise TypeError(f"not a Redis client: {type(client).__name__}")

    def __repr__(self) -> str:
        return f"RedisClient({self.native.description})"

    def execute_command(self, *args: Any) -> Any:
        return self.native.execute(list(args))

    def pipeline_execute(self, commands: Iterable[Iterable[Any]]) -> list[Any]:
        """Runs many commands in one round trip; error replies come back as
        exception objects in the list."""
        return self.native.pipeline([list(c) for c in commands])

    def ping(self) -> bool:
        self.native.ping()
        return True

    def time(self) -> tuple[int, int]:
        seconds, micros = self.execute_command("TIME")
        return int(seconds), int(micros)

    def get(self, name: str | bytes) -> bytes | None:
        return self.execute_command("GET", name)

    def set(self, name: str | bytes, value: Any) -> bool:
        return self.execute_command("SET", name, value) == "OK"

    def delete(self, *names: str | bytes) -> int:
        return self.execute_command("DEL", *names) if names else 0

    def exists(self, *names: str | bytes) -> int:
        return self.execute_command("EXISTS", *names)

    def expire(self, name: str | bytes, time: int) -> bool:
        return bool(self.execute_command("EXPIRE", name, int(time)))

    def ttl(self, name: str | bytes) -> int:
        return self.execute_command("TTL", name)

    def hget(self, name: str | bytes, key: str) -> bytes | None:
        return self.execute_command("HGET", name, key)

    def hset(
        self,
        name: str | bytes,
        key: str | None = None,
        value: Any = None,
        mapping: Mapping[str, Any] | None = None,
    ) -> int:
        pairs: list[Any] = []
        if key is not None:
            pairs += [key, value]
        for k, v in (mapping or {}).items():
            pairs += [k, v]
        if not pairs:
            raise ValueError("hset needs a key and value, or a mapping")
        return self.execute_command("HSET", name, *pairs)

    def hsetnx(self, name: str | bytes, key: str, value: Any) -> bool:
        return bool(self.execute_command("HSETNX", name, key, value))

    def hgetall(self, name: str | bytes) -> dict[bytes, bytes]:
        flat = self.execute_command("HGETALL", name)
        return dict(zip(flat[::2], flat[1::2], strict=False))

    def keys(self, pattern: str = "*") -> list[bytes]:
        return self.execute_command("KEYS", pattern)

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[bytes]:
        cursor = b"0"
        while True:
            args: list[Any] = ["SCAN", cursor]
            if match is not None:
                args += ["MATCH", match]
            if count is not None:
                args += ["COUNT", count]
            cursor, page = self.execute_command(*args)
            yield from page
            if cursor in (b"0", 0, "0"):
                return

    def flushdb(self) -> bool:
        return self.execute_command("FLUSHDB") == "OK"


class RedisStorageDict(MutableMapping[str, float]):
    """Dictionary-like interface for Redis storage (``StorageDictProtocol``).

    The series of one process's store of one metric type - what one
    ``{type}_{pid}.db`` file holds in file mode - keyed by series key (the
    JSON of ``redis_key``), with the seed's key layout
    ``{prefix}:{type}_{mode}:{pid}@{instance}:{metric|meta}:{hash}``. Values
    are written to Redis at once: this is the direct (slow) path, for tools
    and sidecars; metrics of a running app go through ``RedisValue``.
    """

    def __init__(
        self,
        redis_client: Any,
        key_prefix: str = "",
        metric_type: str = "counter",
        multiprocess_mode: str = "",
        process: str | None = None,
    ) -> None:
        self.redis_client = RedisClient.wrap(redis_client)
        self.key_prefix = key_prefix or config.redis_key_prefix
        self._store = _native.file_prefix_for(metric_type, multiprocess_mode)
        self._typ = metric_type
        self._mode = multiprocess_mode
        self.process = process or _native.redis_process_id(
            str(os.getpid()), config.redis_instance_id
        )
        self._writer: Any = None
        self._writer_ttl: int | None = None

    def _key(self, data_type: str, key: str) -> str:
        return _native.redis_key_for(self.key_prefix, self._store, self.process, data_type, key)

    def _keys(self, key: str) -> tuple[str, str]:
        """(metric key, meta key) of a series."""
        return self._key(_native.REDIS_METRIC, key), self._key(_native.REDIS_META, key)

    def _series_writer(self) -> Any:
        """The core's writer (the mirror's protocol and deadline), made
        again when the TTL setting changed."""
        ttl = 0 if config.redis_ttl_disabled else config.redis_ttl_seconds
        if self._writer is None or self._writer_ttl != ttl:
            self._writer = _native.RedisSeriesWriter(self.redis_client.native, self.key_prefix, ttl)
            self._writer_ttl = ttl
        return self._writer

    def _redis_now(self) -> float:
        """Redis server time, or the local clock when Redis cannot say."""
        return self.redis_client.native.server_time()

    def read_value(self, key: str) -> tuple[float, float]:
        """(value, timestamp) of a series; (0.0, 0.0) if it has none."""
        found = self._series_writer().read(self._store, self.process, key)
        return (0.0, 0.0) if found is None else found

    def write_value(self, key: str, value: float, timestamp: float | None = None) -> None:
        """Store a series' value, with its meta key (the series key itself);
        its keys expire at the deadline the mirror gives an instance's keys."""
        ts = self._redis_now() if timestamp is None else float(timestamp)
        log_warnings(
            self._series_writer().write(
                self._store, self.process, key, self._typ, self._mode, float(value), ts
            )
        )

    def cleanup_dead_worker(self, pid: int | str) -> None:
        """Fold a dead worker of this instance into the instance's archive
        (counters, histograms, summaries never go backwards) and delete its
        keys; with native storage on, through its multiprocess directory."""
        from ..service.manager import get_redis_storage_manager

        get_redis_storage_manager().cleanup_dead_worker(pid, self.redis_client, self.key_prefix)

    # -- mapping over this process's store --
    def _meta_keys(self) -> list[bytes]:
        pattern = _native.redis_key_pattern(
            self.key_prefix, self._store, self.process, _native.REDIS_META
        )
        return list(self.redis_client.scan_iter(match=pattern, count=1000))

    def __iter__(self) -> Iterator[str]:
        metas = self._meta_keys()
        if not metas:
            return iter(())
        originals = self.redis_client.pipeline_execute(
            [["HGET", m, _native.REDIS_FIELD_ORIGINAL_KEY] for m in metas]
        )
        return iter([o.decode() for o in originals if isinstance(o, bytes)])

    def __len__(self) -> int:
        return len(self._meta_keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(
            self.redis_client.exists(self._key(_native.REDIS_METRIC, key))
        )

    def __getitem__(self, key: str) -> float:
        found = self._series_writer().read(self._store, self.process, key)
        if found is None:
            raise KeyError(key)
        return float(found[0])

    def __setitem__(self, key: str, value: float) -> None:
        self.write_value(key, value, timestamp=0.0)

    def __delitem__(self, key: str) -> None:
        if not self.redis_client.delete(*self._keys(key)):
            raise KeyError(key)

    def clear(self) -> None:
        keys = list(self)
        for key in keys:
            self.redis_client.delete(*self._keys(key))
