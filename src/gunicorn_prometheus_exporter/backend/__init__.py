"""Redis storage backend: the seed's API on the native core.

Import paths as in the seed: ``gunicorn_prometheus_exporter.backend`` (this
module), ``.backend.core`` (client, dict, values, collector) and
``.backend.service`` (manager).
"""

from .core import (
    REDIS_AVAILABLE,
    REDIS_COLLECTOR_AVAILABLE,
    RedisAuthenticationError,
    RedisClient,
    RedisConnectionError,
    RedisError,
    RedisMultiProcessCollector,
    RedisResponseError,
    RedisStorageDict,
    RedisTimeoutError,
    RedisValue,
    redis_key,
    with_retry,
)
from .service import (
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
    "REDIS_AVAILABLE",
    "REDIS_COLLECTOR_AVAILABLE",
    "RedisAuthenticationError",
    "RedisClient",
    "RedisConnectionError",
    "RedisError",
    "RedisMultiProcessCollector",
    "RedisResponseError",
    "RedisStorageDict",
    "RedisStorageManager",
    "RedisTimeoutError",
    "RedisValue",
    "cleanup_redis_keys",
    "get_redis_client",
    "get_redis_collector",
    "get_redis_storage_manager",
    "is_redis_enabled",
    "redis_key",
    "setup_redis_metrics",
    "teardown_redis_metrics",
    "with_retry",
]
