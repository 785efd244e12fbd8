"""Redis backend core: client, storage dict, value class, collector.

The collector and client are native and always available; the flags are kept
for code written against the seed's conditional imports.
"""

from .client import RedisClient, RedisClientProtocol, RedisStorageDict, StorageDictProtocol
from .dict import redis_key
from .errors import (
    RedisAuthenticationError,
    RedisConnectionError,
    RedisError,
    RedisResponseError,
    RedisTimeoutError,
    with_retry,
)
from .values import RedisValue

try:
    from .collector import RedisMultiProcessCollector

    REDIS_COLLECTOR_AVAILABLE = True
except ImportError:  # pragma: no cover - the native extension is part of the wheel
    RedisMultiProcessCollector = None  # type: ignore[assignment,misc]
    REDIS_COLLECTOR_AVAILABLE = False

REDIS_AVAILABLE = REDIS_COLLECTOR_AVAILABLE

__all__ = [
    "REDIS_AVAILABLE",
    "REDIS_COLLECTOR_AVAILABLE",
    "RedisAuthenticationError",
    "RedisClient",
    "RedisClientProtocol",
    "RedisConnectionError",
    "RedisError",
    "RedisMultiProcessCollector",
    "RedisResponseError",
    "RedisStorageDict",
    "RedisTimeoutError",
    "RedisValue",
    "StorageDictProtocol",
    "redis_key",
    "with_retry",
]
