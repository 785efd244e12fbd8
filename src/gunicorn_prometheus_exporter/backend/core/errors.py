"""Redis errors (raised by the native client) and the seed's retry helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ... import _native

# Created by the native module (its exception translator raises them); the
# stub generator does not see them, hence the annotations.
RedisError: type[Exception] = _native.RedisError  # type: ignore[attr-defined]
RedisConnectionError: type[Exception] = _native.RedisConnectionError  # type: ignore[attr-defined]
RedisTimeoutError: type[Exception] = _native.RedisTimeoutError  # type: ignore[attr-defined]
RedisAuthenticationError: type[Exception] = _native.RedisAuthenticationError  # type: ignore[attr-defined]
RedisResponseError: type[Exception] = _native.RedisResponseError  # type: ignore[attr-defined]

__all__ = [
    "RedisAuthenticationError",
    "RedisConnectionError",
    "RedisError",
    "RedisResponseError",
    "RedisTimeoutError",
    "with_retry",
]

T = TypeVar("T")


def with_retry(func: Callable[[], T], max_retries: int = 3, delay: float = 1) -> T:
    """Call ``func``; on a connection or timeout error retry with exponential
    backoff (``delay``, ``2*delay``, ...), re-raising after ``max_retries``
    attempts. Other errors are raised at once."""
    for attempt in range(max_retries):
        try:
            return func()
        except (RedisConnectionError, RedisTimeoutError):
            if attempt == max_retries - 1:
                raise
            time.sleep(delay * (2**attempt))
    raise ValueError("max_retries must be at least 1")
