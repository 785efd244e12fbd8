#!/usr/bin/env bash
# Runs every test: the C++ core tests (GoogleTest via CTest) and the Python
# tests (pytest, against real processes and prometheus_client as the oracle).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"

jobs="$(nproc)"
cmake -S "$root" -B "$root/build/tests" -DGPE_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$root/build/tests" -j "$jobs"
ctest --test-dir "$root/build/tests" --output-on-failure -j "$jobs"

# The installed package type-checks (run outside the source tree, so that the
# installed copy with its extension stubs is the one checked).
(cd /tmp && "$root/.venv/bin/python" -m mypy --ignore-missing-imports -p gunicorn_prometheus_exporter)

cd "$root"
"$root/.venv/bin/python" -m pytest -q "$@"
