"""The seed's Redis API surface: import paths, names, signatures and
availability flags (no Redis needed)."""

from __future__ import annotations

import inspect

import pytest

import gunicorn_prometheus_exporter.backend as backend
from gunicorn_prometheus_exporter.backend import core, service

SEED_NAMES = {
    "RedisStorageDict",
    "RedisStorageManager",
    "RedisMultiProcessCollector",
    "RedisValue",
    "RedisConnectionError",
    "RedisTimeoutError",
    "RedisAuthenticationError",
    "with_retry",
    "redis_key",
    "get_redis_storage_manager",
    "setup_redis_metrics",
    "teardown_redis_metrics",
    "is_redis_enabled",
    "get_redis_client",
    "cleanup_redis_keys",
    "get_redis_collector",
}


def test_backend_exports_the_seed_names() -> None:
    assert set(backend.__all__) >= SEED_NAMES
    for name in backend.__all__:
        assert getattr(backend, name) is not None, name


def test_seed_import_paths() -> None:
    from gunicorn_prometheus_exporter.backend.core.client import RedisStorageDict
    from gunicorn_prometheus_exporter.backend.core.collector import RedisMultiProcessCollector
    from gunicorn_prometheus_exporter.backend.core.dict import redis_key
    from gunicorn_prometheus_exporter.backend.core.values import RedisValue
    from gunicorn_prometheus_exporter.backend.service.manager import (
        RedisStorageManager,
        get_redis_storage_manager,
    )

    assert RedisStorageDict is backend.RedisStorageDict is core.RedisStorageDict
    assert RedisMultiProcessCollector is backend.RedisMultiProcessCollector
    assert redis_key is backend.redis_key
    assert RedisValue is backend.RedisValue
    assert RedisStorageManager is backend.RedisStorageManager is service.RedisStorageManager
    assert get_redis_storage_manager is backend.get_redis_storage_manager


def test_availability_flags() -> None:
    assert core.REDIS_COLLECTOR_AVAILABLE is True
    assert core.REDIS_AVAILABLE is True
    assert backend.REDIS_COLLECTOR_AVAILABLE is True
    assert core.RedisMultiProcessCollector is not None


def test_redis_value_is_the_native_value() -> None:
    from gunicorn_prometheus_exporter.native_values import NativeValue

    assert backend.RedisValue is NativeValue


def test_error_classes() -> None:
    for name in (
        "RedisConnectionError",
        "RedisTimeoutError",
        "RedisAuthenticationError",
        "RedisResponseError",
    ):
        error = getattr(backend, name)
        assert issubclass(error, backend.RedisError)
        assert issubclass(error, Exception)
        assert str(error("message")) == "message"


def test_signatures() -> None:
    def params(func) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(func).parameters.values()]

    empty = inspect.Parameter.empty
    assert params(backend.with_retry) == [("func", empty), ("max_retries", 3), ("delay", 1)]
    assert params(backend.redis_key) == [
        ("metric_name", empty),
        ("name", empty),
        ("labelnames", empty),
        ("labelvalues", empty),
        ("help_text", empty),
    ]
    assert params(backend.RedisStorageManager.__init__) == [
        ("self", empty),
        ("redis_client_factory", None),
        ("value_class_factory", None),
    ]
    assert params(backend.RedisMultiProcessCollector.__init__) == [
        ("self", empty),
        ("registry", empty),
        ("redis_client", None),
        ("redis_key_prefix", None),
    ]
    merge = inspect.getattr_static(backend.RedisMultiProcessCollector, "merge_from_redis")
    assert isinstance(merge, staticmethod)
    assert params(backend.RedisMultiProcessCollector.merge_from_redis) == [
        ("redis_client", empty),
        ("redis_key_prefix", None),
        ("accumulate", True),
    ]
    assert params(backend.RedisStorageDict.__init__)[:3] == [
        ("self", empty),
        ("redis_client", empty),
        ("key_prefix", ""),
    ]
    for method in (
        "read_value",
        "write_value",
        "cleanup_dead_worker",
        "keys",
        "values",
        "items",
        "clear",
        "update",
    ):
        assert callable(getattr(backend.RedisStorageDict, method)), method
    for method in (
        "setup",
        "teardown",
        "is_enabled",
        "get_client",
        "cleanup_keys",
        "get_collector",
        "cleanup_dead_worker",
    ):
        assert callable(getattr(backend.RedisStorageManager, method)), method
    for method in ("collect", "render", "stats"):
        assert callable(getattr(backend.RedisMultiProcessCollector, method)), method
    for classmethod_name in ("from_url", "from_config", "wrap"):
        assert isinstance(
            inspect.getattr_static(backend.RedisClient, classmethod_name), classmethod
        )


def test_collector_requires_a_registry_argument() -> None:
    with pytest.raises(TypeError):
        backend.RedisMultiProcessCollector()  # type: ignore[call-arg]


def test_wrap_rejects_what_is_not_a_client() -> None:
    with pytest.raises(TypeError, match="not a Redis client"):
        backend.RedisClient.wrap(object())
