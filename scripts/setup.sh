#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine: Debian build dependencies, a virtual
# environment in .venv (Debian's python3), and the package (C++ core +
# extension + agent) installed into it with its test extras.
#
#   scripts/setup.sh             everything
#   scripts/setup.sh --apt-only  only the Debian packages (scripts/build-wheel.sh)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Keep README.md's list ("Build by hand") the same as this one.
packages=(
    # build: compiler, CMake, Python headers for the extension
    g++ cmake make pkg-config python3-dev python3-venv
    # libraries of the core, the agent and the tests
    nlohmann-json3-dev libhiredis-dev libssl-dev zlib1g-dev libgtest-dev
    # the tests' real servers, certificates and socket counts (ss); Prometheus
    # and promtool for the deployment kit's tests (deploy/)
    redis-server openssl iproute2 prometheus
)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: apt-get install ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" != "--apt-only" ] || exit 0

if [ ! -x "$root/.venv/bin/python" ]; then
    python3 -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install -q --disable-pip-version-check "$root[test]"
