#!/usr/bin/env bash
# Lints the Python code (src, tests, bench) with ruff, as configured in
# pyproject.toml: the lint rules, then the formatting (checked, not applied).
# Uses .venv's ruff when there is one (scripts/setup.sh), else ruff on PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ruff="$root/.venv/bin/ruff"
[ -x "$ruff" ] || ruff="ruff"
cd "$root"
status=0
"$ruff" check src tests bench || status=1
"$ruff" format --check --output-format concise src tests bench || status=1
exit "$status"
