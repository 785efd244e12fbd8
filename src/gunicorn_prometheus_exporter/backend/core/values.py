"""``RedisValue``: the value class prometheus_client uses in Redis mode.

It is the native value: an update is one atomic store into this process's
memory-mapped file, and the instance's mirror sends the files to Redis in
pipelined batches (``RedisStorageManager.setup()`` starts it). The request path
never waits for Redis, and nothing is lost when Redis is away: values are sent
after it comes back. Users do not create it; prometheus_client does, once
``setup()`` made it the value class.
"""

from __future__ import annotations

from ...native_values import NativeValue

RedisValue = NativeValue

__all__ = ["RedisValue"]
