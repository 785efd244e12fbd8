#!/usr/bin/env bash
# Prepares a fresh machine: Debian build dependencies, a virtual environment
# in .venv, and the package (C++ core + extension) installed into it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(g++ cmake make pkg-config python3-venv libgtest-dev nlohmann-json3-dev libhiredis-dev
          zlib1g-dev
          libssl-dev openssl redis-server)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$root/.venv/bin/python" ]; then
    python3 -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install -q --disable-pip-version-check "$root[test]"
