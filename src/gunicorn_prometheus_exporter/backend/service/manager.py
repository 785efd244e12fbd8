"""``RedisStorageManager``: switches a process to Redis-backed storage.

Setting up makes prometheus_client's values native (memory-mapped files in a
multiprocess directory, a private tmpfs one by default) and starts the mirror
that sends the directory to Redis every ``REDIS_FLUSH_INTERVAL`` seconds.
Every process of an instance may set up; one of them (whichever holds the
directory's mirror lock) mirrors, and another takes over if it dies. When
Redis cannot be reached at set-up, ``setup()`` logs why and returns False,
and file storage keeps working.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from ... import _native
from ...config import config
from ...directory import make_private_directory
from ...multiprocess import mark_process_dead
from ...native_values import (
    disable_native_values,
    enable_native_values,
    native_values_enabled,
    replace_value_class,
)
from ..core.client import RedisClient
from ..core.collector import RedisMultiProcessCollector
from ..core.errors import RedisError
from .processes import dead_processes

logger = logging.getLogger("gunicorn_prometheus_exporter")


def _mirror_log(level: int, message: str) -> None:
    logger.log(level, "%s", message)


def _start_mirror(client: RedisClient, directory: str) -> Any:
    """The mirror service of ``directory``, started (it leads if nobody does)."""
    ttl = 0 if config.redis_ttl_disabled else config.redis_ttl_seconds
    mirror = _native.MirrorService(
        client.native,
        directory,
        config.redis_key_prefix,
        config.redis_instance_id,
        ttl,
        config.redis_flush_interval,
        _mirror_log,
        config.redis_layout,
    )
    mirror.start()
    return mirror


def _multiprocess_directory() -> tuple[str, bool]:
    """(directory, whether it was made here): PROMETHEUS_MULTIPROC_DIR, or a
    private in-memory one named there, so that workers inherit it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        if not os.path.isdir(directory):
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR={directory!r} is not a directory")
        return directory, False
    # Private and in memory: values never touch a disk in Redis mode.
    return make_private_directory(), True


def _remove_private_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == directory:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def _fold_in_redis(client: Any, prefix: str, pid: int | str) -> None:
    """Fold a dead worker into its instance's archive in Redis itself."""
    instance = config.redis_instance_id
    _, _, skipped = _native.redis_fold_process(
        RedisClient.wrap(client).native,
        prefix,
        _native.redis_process_id(str(pid), instance),
        _native.redis_process_id("archive", instance),
    )
    for warning in skipped:
        logger.warning("%s", warning)


class RedisStorageManager:
    """Manages Redis-based metrics storage with proper lifecycle management."""

    def __init__(
        self,
        redis_client_factory: Callable[[], Any] | None = None,
        value_class_factory: Callable[[], type] | None = None,
    ) -> None:
        """``redis_client_factory`` makes the client (default: from
        PROMETHEUS_REDIS_URL or REDIS_*); ``value_class_factory`` makes the
        value class to install (default: ``RedisValue``)."""
        self._redis_client_factory = redis_client_factory or RedisClient.from_config
        self._value_class_factory = value_class_factory
        self._redis_client: RedisClient | None = None
        self._mirror: Any = None
        self._directory: str | None = None
        self._owned_directory: tuple[str, int] | None = None  # (path, creator pid)
        self._enabled_native_values = False
        self._previous_value_class: type | None = None
        self._hooks_registered = False

    # -- lifecycle --
    def setup(self) -> bool:
        """Set up Redis-based metrics storage; False (logged) if it cannot."""
        if not config.redis_enabled:
            logger.debug("Redis is not enabled, skipping Redis metrics setup")
            return False
        if self.is_enabled():
            return True
        try:
            self._start()
            return True
        except Exception as e:  # any failure leaves file storage working
            logger.error("Failed to setup Redis metrics: %s", e)
            self._cleanup()
            return False

    def teardown(self) -> None:
        """Teardown Redis storage and restore original behavior (a last
        mirror pass sends what is left)."""
        self._cleanup()

    def is_enabled(self) -> bool:
        """Check if Redis storage is enabled and working."""
        return self._mirror is not None

    def get_client(self) -> RedisClient | None:
        """Get the Redis client instance."""
        return self._redis_client

    def get_collector(self) -> RedisMultiProcessCollector | None:
        """Get Redis-based collector for metrics collection."""
        if self._redis_client is None:
            return None
        return RedisMultiProcessCollector(None, self._redis_client, config.redis_key_prefix)

    def cleanup_keys(self) -> None:
        """Archive the processes of this instance that are gone."""
        if self._directory is None:
            return
        for pid in dead_processes(self._directory):
            mark_process_dead(pid, self._directory)
        self._pass_now()

    def cleanup_dead_worker(
        self, pid: int | str, client: Any = None, prefix: str | None = None
    ) -> None:
        """Fold a dead worker of this instance into its archive and delete
        its keys: through the multiprocess directory when this process has
        one (the mirror then moves both in one transaction), else in Redis
        itself."""
        prefix = prefix or config.redis_key_prefix
        if self._directory is not None and prefix == config.redis_key_prefix:
            mark_process_dead(pid, self._directory)
            self._pass_now()
            return
        _fold_in_redis(client or self._redis_client or RedisClient.from_config(), prefix, pid)

    # -- internals --
    def _start(self) -> None:
        client = RedisClient.wrap(self._redis_client_factory())
        client.ping()
        self._redis_client = client
        self._directory, owned = _multiprocess_directory()
        if owned:
            self._owned_directory = (self._directory, os.getpid())
        self._enabled_native_values = not native_values_enabled()
        enable_native_values(self._directory)
        self._mirror = _start_mirror(client, self._directory)
        if self._value_class_factory is not None:
            self._previous_value_class = replace_value_class(self._value_class_factory())
        self._register_hooks()
        logger.info(
            "Redis metrics storage on: %s, key prefix %r, instance %r",
            client.native.description,
            config.redis_key_prefix,
            config.redis_instance_id,
        )

    def _pass_now(self) -> None:
        if self._mirror is None:
            return
        try:
            self._mirror.pass_now()
        except RedisError as e:
            logger.warning("Redis mirror pass failed (will retry): %s", e)

    def _register_hooks(self) -> None:
        if self._hooks_registered:
            return
        self._hooks_registered = True
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        atexit.register(self._cleanup)

    def _after_fork_in_child(self) -> None:
        if self._mirror is not None:
            self._mirror.after_fork_in_child()
            self._mirror.start()  # stands by; takes over if the leader dies

    def _cleanup(self) -> None:
        if self._mirror is not None:
            self._mirror.stop()
            self._mirror = None
        self._restore_values()
        if self._owned_directory is not None and self._owned_directory[1] == os.getpid():
            _remove_private_directory(self._owned_directory[0])
        self._owned_directory = None
        self._directory = None
        self._redis_client = None

    def _restore_values(self) -> None:
        if self._previous_value_class is not None:
            replace_value_class(self._previous_value_class)
            self._previous_value_class = None
        if self._enabled_native_values:
            disable_native_values()
            self._enabled_native_values = False


_manager: RedisStorageManager | None = None  # the process-wide manager of the global functions


def get_redis_storage_manager() -> RedisStorageManager:
    """Get or create global Redis storage manager."""
    global _manager
    if _manager is None:
        _manager = RedisStorageManager()
    return _manager


def setup_redis_metrics() -> bool:
    """Set up Redis-based metrics storage."""
    return get_redis_storage_manager().setup()


def teardown_redis_metrics() -> None:
    """Teardown Redis-based metrics storage."""
    get_redis_storage_manager().teardown()


def is_redis_enabled() -> bool:
    """Check if Redis metrics are enabled and working."""
    return get_redis_storage_manager().is_enabled()


def get_redis_client() -> RedisClient | None:
    """Get the Redis client instance."""
    return get_redis_storage_manager().get_client()


def cleanup_redis_keys() -> None:
    """Clean up Redis keys for dead processes."""
    get_redis_storage_manager().cleanup_keys()


def get_redis_collector() -> RedisMultiProcessCollector | None:
    """Get Redis-based collector for metrics collection."""
    return get_redis_storage_manager().get_collector()
