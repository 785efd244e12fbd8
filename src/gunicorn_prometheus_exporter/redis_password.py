"""The Redis passwords, taken out of the master's environment before anything
else runs: workers and the agent must not inherit it (the agent gets it
through a pipe, see :class:`.agent.AgentSupervisor`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import _native


@dataclass(frozen=True)
class RedisSecrets:
    """The passwords the agent gets through its pipe: Redis's and the sentinels'."""

    password: str | None = None
    sentinel_password: str | None = None


def _take_variable(name: str) -> str | None:
    """``name``'s value, unset and zeroed in the environment block too (what
    /proc/PID/environ shows and forked workers inherit)."""
    value = os.environ.get(name)
    if value is not None:
        _native.scrub_environment_variable(name)
        os.environ.pop(name, None)
    return value


def take_redis_secrets() -> RedisSecrets:
    """The Redis and sentinel passwords, taken out of this process's
    environment. PROMETHEUS_REDIS_URL keeps its place without them; as
    elsewhere, the URL's win."""
    password = _take_variable("REDIS_PASSWORD")
    sentinel_password = _take_variable("REDIS_SENTINEL_PASSWORD")
    url = os.environ.get("PROMETHEUS_REDIS_URL")
    if url:
        parsed = _native.parse_redis_url(url)
        in_url = parsed.get("password") or None
        sentinel_in_url = parsed.get("sentinel_password") or None
        if in_url is not None or sentinel_in_url is not None:
            without = url_without_password(url)
            _native.scrub_environment_variable("PROMETHEUS_REDIS_URL")
            os.environ["PROMETHEUS_REDIS_URL"] = without
            password = in_url if in_url is not None else password
            sentinel_password = sentinel_in_url or sentinel_password
    return RedisSecrets(password, sentinel_password)


def url_without_password(url: str) -> str:
    """``url`` with its passwords (``user:password@``, ``?password=``,
    ``?sentinel_password=``) removed and everything else kept; ValueError if
    that cannot be done."""
    scheme, sep, rest = url.partition("://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        user = rest[:at].split(":", 1)[0]
        rest = (user + "@" if user else "") + rest[at + 1 :]
    path, _, query = rest.partition("?")
    secret = ("password=", "sentinel_password=")
    kept = [pair for pair in query.split("&") if pair and not pair.startswith(secret)]
    without = scheme + sep + path + ("?" + "&".join(kept) if kept else "")
    before, after = _native.parse_redis_url(url), _native.parse_redis_url(without)
    blank = {"password": "", "sentinel_password": ""}
    if (
        after.get("password")
        or after.get("sentinel_password")
        or {**before, **blank} != {**after, **blank}
    ):
        raise ValueError(
            "PROMETHEUS_REDIS_URL: cannot take the password out of the URL; give it in "
            "REDIS_PASSWORD instead"
        )
    return without
