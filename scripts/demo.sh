#!/usr/bin/env bash
# Runs the demo: several worker processes record metrics natively, and one
# endpoint serves their combined view. Prints the /metrics URL.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
exec "$root/.venv/bin/python" "$root/demo/multiprocess_demo.py" "$@"
