"""Gunicorn configuration that adds the exporter to any app and worker class.

    gunicorn -c python:gunicorn_prometheus_exporter.gunicorn_config app:app

or, in a config file of your own::

    from gunicorn_prometheus_exporter.gunicorn_config import *  # noqa: F403

To keep a hook of your own, call ours from it::

    from gunicorn_prometheus_exporter import hooks
    def post_fork(server, worker):
        hooks.post_fork(server, worker)
        ...  # yours
"""

from gunicorn_prometheus_exporter.hooks import (
    child_exit,
    nworkers_changed,
    on_exit,
    on_reload,
    on_starting,
    post_fork,
    post_request,
    pre_request,
    when_ready,
    worker_abort,
    worker_exit,
)

__all__ = [
    "child_exit",
    "nworkers_changed",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "post_request",
    "pre_request",
    "when_ready",
    "worker_abort",
    "worker_exit",
]
