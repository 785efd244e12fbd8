"""The package logger, shared by every module."""

import logging
from collections.abc import Iterable

logger = logging.getLogger("gunicorn_prometheus_exporter")


def log_warnings(warnings: Iterable[str]) -> None:
    """Log the warnings the native core collected during one call."""
    for message in warnings:
        logger.warning("%s", message)
