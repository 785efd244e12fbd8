#!/usr/bin/env bash
# The C++ tests (core and agent, CTest) under ThreadSanitizer: a build of its
# own (-DGPE_TSAN=ON), since TSan excludes ASan. Tests that need Redis start
# their own redis-server. Fails on any data race TSan reports.
#
#   GPE_JOBS=2 .ci/tsan.sh    # build and test parallelism (default: nproc)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

jobs="${GPE_JOBS:-$(nproc)}"
build="$root/build/tsan"

packages=(g++ cmake make pkg-config libgtest-dev nlohmann-json3-dev libhiredis-dev
          zlib1g-dev libssl-dev redis-server)
missing=()
for package in "${packages[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== C++ tests under ThreadSanitizer"
cmake -S . -B "$build" -DGPE_BUILD_TESTS=ON -DGPE_TSAN=ON -DGPE_BUILD_PYTHON=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs"
TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}" \
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
