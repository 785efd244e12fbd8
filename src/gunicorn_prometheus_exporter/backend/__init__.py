"""Redis storage backend: the seed's API on the native core.

Import paths as in the seed: ``gunicorn_prometheus_exporter.backend`` (this
module), ``.backend.core`` (client, dict, values, collector) and
``.backend.service`` (manager).
"""

# Everything of both subpackages, so that each name list is kept once.
from . import core, service
from .core import *  # noqa: F403
from .service import *  # noqa: F403

__all__ = [*core.__all__, *service.__all__]
