#!/usr/bin/env bash
# The Python test suite against the repaired wheel of each CPython version:
# a virtual environment per version with dist/'s wheel installed plus the
# test extras of pyproject.toml, then pytest over tests/ (the installed copy
# is the one imported: src/ is never on sys.path).
#
#   .ci/wheel-tests.sh 3.10 3.12 3.13 [-- PYTEST ARGS...]
# Interpreters as scripts/build-wheel.sh finds them (GPE_PYTHON_3_X, python3.X
# on PATH, pyenv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

versions=()
while (($#)) && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ "${1:-}" != "--" ] || shift
command -v redis-server >/dev/null || scripts/setup.sh --apt-only

interpreter() {
    local version="$1" var candidate
    var="GPE_PYTHON_${version//./_}"
    if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
    for candidate in $(command -v "python$version" 2>/dev/null) \
                     $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/python"$version" 2>/dev/null | sort -V -r); do
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.prefix != sys.base_prefix)' >/dev/null 2>&1; then
            echo "$candidate"; return
        fi
    done
}

status=0
for version in "${versions[@]}"; do
    tag="cp${version//./}"
    wheel="$(ls "$root"/dist/gunicorn_prometheus_exporter-*-"$tag"-"$tag"-manylinux*.whl 2>/dev/null | head -n1)"
    [ -f "$wheel" ] || { echo "wheel-tests: no $tag wheel in dist/ (scripts/build-wheel.sh $version)" >&2; exit 1; }
    python="$(interpreter "$version")"
    [ -n "$python" ] || { echo "wheel-tests: no CPython $version" >&2; exit 1; }
    venv="$root/build/wheel-test-venvs/$tag"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    start=$SECONDS
    echo "== pytest on CPython $version against $(basename "$wheel")"
    "$venv/bin/pip" install -q --disable-pip-version-check "$wheel[test]"
    # The tests that install the exporter into further venvs take this wheel too.
    if (cd "$root" && GPE_TEST_WHEEL="$wheel" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"); then
        echo "   CPython $version: passed ($((SECONDS - start)) s)"
    else
        echo "   CPython $version: FAILED ($((SECONDS - start)) s)"
        status=1
    fi
done
exit "$status"
