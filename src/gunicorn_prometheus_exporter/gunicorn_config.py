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

import os as _os

from gunicorn_prometheus_exporter.config import config as _config
from gunicorn_prometheus_exporter.config import load_yaml_config as _load_yaml_config

# Gunicorn reads the hooks from this module (and a star import copies them).
from gunicorn_prometheus_exporter.hooks import (  # noqa: F401
    child_exit,
    on_exit,
    on_reload,
    on_starting,
    post_fork,
    post_request,
    post_worker_init,
    pre_fork,
    pre_request,
    when_ready,
    worker_abort,
    worker_exit,
)

# A YAML file named by GUNICORN_PROMETHEUS_CONFIG (schema of the 0.2.x
# exporter) fills in what the environment does not set; its gunicorn section
# sets the Gunicorn settings below (the command line still wins).
if _config.config_file:
    _load_yaml_config(_config.config_file)
if "GUNICORN_WORKERS" in _os.environ:
    workers = int(_os.environ["GUNICORN_WORKERS"])
if "GUNICORN_TIMEOUT" in _os.environ:
    timeout = int(_os.environ["GUNICORN_TIMEOUT"])
if "GUNICORN_KEEPALIVE" in _os.environ:
    keepalive = int(_os.environ["GUNICORN_KEEPALIVE"])
