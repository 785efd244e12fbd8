"""Metrics never take Gunicorn down: the decorator every hook of ours wears.

An exception out of a guarded hook is logged (with the traceback the first
time, per hook and process) and goes no further.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ._logging import logger

F = TypeVar("F", bound=Callable[..., Any])

# The hooks whose failure this process logged already (per process: a
# worker inherits its master's at fork, as it inherits the hooks).
failed_hooks: set[str] = set()


def guarded(hook: F) -> F:
    """``hook``, logging and swallowing any exception it raises."""
    name = hook.__name__.lstrip("_")

    @functools.wraps(hook)
    def guarded_hook(*args: Any) -> Any:
        try:
            return hook(*args)
        except Exception:
            if name not in failed_hooks:
                failed_hooks.add(name)
                logger.exception(
                    "metrics hook %s failed; Gunicorn carries on (further failures of it are "
                    "logged at debug level)",
                    name,
                )
            else:
                logger.debug("metrics hook %s failed again", name, exc_info=True)
            return None

    return guarded_hook  # type: ignore[return-value]
