#!/usr/bin/env bash
# Runs the demo: a WSGI app under Gunicorn (4 workers) with the exporter, some
# traffic, and the /metrics URL with an excerpt of what it serves; it ends by
# itself after a few seconds (--serve: at Ctrl-C) and stops Gunicorn's whole
# process group, agent included. demo/run_demo.py --help lists the options.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
exec "$root/.venv/bin/python" "$root/demo/run_demo.py" "$@"
