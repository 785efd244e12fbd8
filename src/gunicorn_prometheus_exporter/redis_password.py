"""The Redis password, taken out of the master's environment before anything
else runs: workers and the agent must not inherit it (the agent gets it
through a pipe, see :class:`.agent.AgentSupervisor`)."""

from __future__ import annotations

import os

from . import _native


def take_redis_password() -> str | None:
    """The Redis password, taken out of this process's environment. Zeroed
    in the environment block too (what /proc/PID/environ shows and forked
    workers inherit), not only unset. PROMETHEUS_REDIS_URL keeps its place
    without the password; as elsewhere, the URL's wins."""
    password = os.environ.get("REDIS_PASSWORD")
    if password is not None:
        _native.scrub_environment_variable("REDIS_PASSWORD")
        os.environ.pop("REDIS_PASSWORD", None)
    url = os.environ.get("PROMETHEUS_REDIS_URL")
    if url:
        in_url = _native.parse_redis_url(url).get("password") or None
        if in_url is not None:
            without = url_without_password(url)
            _native.scrub_environment_variable("PROMETHEUS_REDIS_URL")
            os.environ["PROMETHEUS_REDIS_URL"] = without
            password = in_url
    return password


def url_without_password(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``)
    removed and everything else kept; ValueError if that cannot be done."""
    scheme, sep, rest = url.partition("://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        user = rest[:at].split(":", 1)[0]
        rest = (user + "@" if user else "") + rest[at + 1 :]
    path, _, query = rest.partition("?")
    kept = [pair for pair in query.split("&") if pair and not pair.startswith("password=")]
    without = scheme + sep + path + ("?" + "&".join(kept) if kept else "")
    before, after = _native.parse_redis_url(url), _native.parse_redis_url(without)
    if after.get("password") or {**before, "password": ""} != {**after, "password": ""}:
        raise ValueError(
            "PROMETHEUS_REDIS_URL: cannot take the password out of the URL; give it in "
            "REDIS_PASSWORD instead"
        )
    return without
