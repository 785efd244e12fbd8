#!/usr/bin/env bash
# Lints the Python code (src, tests, bench) with ruff, as configured in
# pyproject.toml: the lint rules, then the formatting (checked, not applied);
# then the size rule of the whole code base: no function over 60 lines in
# core/, agent/, python/ or the package (lizard; a binding or declaration
# table says "#lizard forgives" and why).
# Uses .venv's tools when there (pip install '.[dev]'), else those on PATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tool() { if [ -x "$root/.venv/bin/$1" ]; then echo "$root/.venv/bin/$1"; else echo "$1"; fi; }
cd "$root"
status=0
"$(tool ruff)" check src tests bench || status=1
"$(tool ruff)" format --check --output-format concise src tests bench || status=1
# -C/-a high: only the length is a rule here; tests are exempt.
long="$("$(tool lizard)" -C 1000 -a 100 -L 60 -w -x '*_test.cpp' core agent python src || true)"
if [ -n "$long" ]; then
    echo "functions over 60 lines:" >&2
    echo "$long" >&2
    status=1
fi
exit "$status"
