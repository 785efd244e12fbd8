"""No hook of ours raises into Gunicorn: a failure is logged once per hook,
with the hook's name, and goes no further (invalid settings are the one
thing that still stops Gunicorn, at start, by design)."""

from __future__ import annotations

import logging

import pytest

from gunicorn_prometheus_exporter import guard, hooks


class BrokenServer:
    """A server object without what the hooks read."""


def test_a_failing_hook_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    guard.failed_hooks.discard("on_reload")
    with caplog.at_level(logging.DEBUG, logger="gunicorn_prometheus_exporter"):
        assert hooks.on_reload(BrokenServer()) is None
        assert hooks.on_reload(BrokenServer()) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "metrics hook on_reload failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # with the traceback, the first time
    assert any(
        "on_reload failed again" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG
    )


def test_every_hook_of_ours_is_guarded() -> None:
    for name, hook in hooks.HOOKS.items():
        if name in ("on_starting", "when_ready"):
            continue  # they check settings first (ValueError stops Gunicorn), then call guarded code
        assert hasattr(hook, "__wrapped__"), f"{name} is not guarded"


def test_an_invalid_setting_still_stops_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_METRICS_PORT", "not-a-port")
    with pytest.raises(ValueError, match="PROMETHEUS_METRICS_PORT"):
        hooks.on_starting(BrokenServer())


def test_the_hooks_are_the_public_modules_names() -> None:
    """hooks and gunicorn_config name the very functions HOOKS installs (they
    live in master_hooks and worker_hooks)."""
    from gunicorn_prometheus_exporter import gunicorn_config, master_hooks, worker_hooks

    assert set(hooks.HOOKS) == {
        "on_starting",
        "when_ready",
        "child_exit",
        "pre_fork",
        "on_reload",
        "on_exit",
        "post_fork",
        "post_worker_init",
        "pre_request",
        "post_request",
        "worker_abort",
        "worker_exit",
    }
    for name, hook in hooks.HOOKS.items():
        assert getattr(hooks, name) is hook
        assert getattr(gunicorn_config, name) is hook
        assert hook.__module__ in (master_hooks.__name__, worker_hooks.__name__)
    for name in hooks.__all__:
        assert hasattr(hooks, name), name
