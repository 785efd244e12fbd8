"""``redis_key``: the series key of a sample, as the seed defines it."""

from __future__ import annotations

from collections.abc import Sequence

from ... import _native


def redis_key(
    metric_name: str,
    name: str,
    labelnames: Sequence[str],
    labelvalues: Sequence[str],
    help_text: str,
) -> str:
    """Format a key for use in Redis, similar to mmap_key.

    Returns the JSON string ``[metric_name, name, {labels}, help_text]``, byte
    for byte what ``json.dumps(..., sort_keys=True)`` gives (and what
    prometheus_client's ``mmap_key`` gives), computed by the native core.
    """
    return _native.series_key(metric_name, name, list(labelnames), list(labelvalues), help_text)
