"""``RedisMultiProcessCollector``: every series under a prefix, merged in C++
exactly as prometheus_client merges multiprocess files."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client.metrics_core import Metric

from ... import _native
from ..._logging import log_warnings
from ...config import config
from ...multiprocess import _to_metrics
from .client import RedisClient
from .errors import RedisError

logger = logging.getLogger("gunicorn_prometheus_exporter")


def _native_client(redis_client: Any | None) -> Any:
    if redis_client is None:
        # PROMETHEUS_REDIS_URL, else the REDIS_* settings (localhost:6379).
        return RedisClient.from_config().native
    return RedisClient.wrap(redis_client).native


class RedisMultiProcessCollector:
    """Collector for Redis-based multi-process mode.

    ``registry`` is required (``None`` to register nowhere); ``redis_client``
    is ours, a redis-py client (its connection settings are used), or taken
    from ``PROMETHEUS_REDIS_URL`` / the ``REDIS_*`` settings.
    """

    def __init__(
        self, registry: Any, redis_client: Any = None, redis_key_prefix: str | None = None
    ) -> None:
        self._redis_key_prefix = redis_key_prefix or config.redis_key_prefix
        self._client = _native_client(redis_client)
        self._reader = _native.RedisReader(self._client, self._redis_key_prefix)
        if registry:
            registry.register(self)

    @staticmethod
    def merge_from_redis(
        redis_client: Any, redis_key_prefix: str | None = None, accumulate: bool = True
    ) -> list[Metric]:
        """Merge every series under the prefix (histograms made cumulative
        unless ``accumulate=False``)."""
        reader = _native.RedisReader(
            _native_client(redis_client), redis_key_prefix or config.redis_key_prefix
        )
        families, warnings = reader.collect(accumulate)
        log_warnings(warnings)
        return _to_metrics(families)

    def collect(self) -> list[Metric]:
        """The merged metrics; empty (and logged) when Redis cannot be read."""
        try:
            families, warnings = self._reader.collect(True)
        except RedisError as e:
            logger.warning("Redis collector error: %s", e)
            return []
        log_warnings(warnings)
        return _to_metrics(families)

    def render(self, openmetrics: bool = False) -> bytes:
        """The exposition, rendered in C++ (raises RedisError if Redis fails)."""
        body, warnings = self._reader.render(openmetrics)
        log_warnings(warnings)
        return body

    def stats(self) -> dict[str, int]:
        """Redis commands and keys of the last scrape."""
        return self._reader.stats()
