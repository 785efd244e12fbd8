"""Redis storage lifecycle."""

from .manager import (
    RedisStorageManager,
    cleanup_redis_keys,
    get_redis_client,
    get_redis_collector,
    get_redis_storage_manager,
    is_redis_enabled,
    setup_redis_metrics,
    teardown_redis_metrics,
)

__all__ = [
    "RedisStorageManager",
    "cleanup_redis_keys",
    "get_redis_client",
    "get_redis_collector",
    "get_redis_storage_manager",
    "is_redis_enabled",
    "setup_redis_metrics",
    "teardown_redis_metrics",
]
