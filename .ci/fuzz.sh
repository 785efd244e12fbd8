#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang from Debian; ASan + UBSan)
# and runs each from its seeds in fuzz/corpus/<name>/ for GPE_FUZZ_SECONDS
# seconds (default 60). Fails if any harness finds a crash, a sanitizer
# report, a leak, a timeout or an out-of-memory; the input that did it is in
# build/fuzz/artifacts/, to become a regression test in core/tests/.
#
#   GPE_FUZZ_SECONDS=600 .ci/fuzz.sh             # longer
#   GPE_FUZZ_TARGETS="redis_reply" .ci/fuzz.sh   # some harnesses only
#   GPE_JOBS=2 .ci/fuzz.sh                       # build parallelism (default: nproc)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${GPE_FUZZ_SECONDS:-60}"
jobs="${GPE_JOBS:-$(nproc)}"
build="$root/build/fuzz"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need() {
    local missing=()
    for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
    if ((${#missing[@]})); then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
need clang cmake make pkg-config nlohmann-json3-dev libhiredis-dev libcpp-httplib-dev \
    zlib1g-dev libssl-dev
# libFuzzer and the sanitizer runtimes of the clang Debian installed.
need "libclang-rt-$(clang++ -dumpversion | cut -d. -f1)-dev"

echo "== build fuzzers (clang, ASan + UBSan + libFuzzer)"
cmake -S . -B "$build" -DGPE_FUZZ=ON -DGPE_BUILD_TESTS=OFF -DGPE_BUILD_PYTHON=OFF \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs" --target fuzzers

targets="${GPE_FUZZ_TARGETS:-$(ls fuzz/corpus)}"
mkdir -p "$build/artifacts"
failed=()
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
for name in $targets; do
    echo "== fuzz_$name for ${seconds}s"
    # New inputs go to a scratch directory; the seeds in the repo stay as they are.
    work="$build/corpus/$name"
    rm -rf "$work"
    mkdir -p "$work"
    start=$SECONDS
    if "$build/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" \
        "$work" "fuzz/corpus/$name" >"$build/fuzz_$name.log" 2>&1; then
        grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$build/fuzz_$name.log" |
            tr '\n' ' '
        echo "($((SECONDS - start))s)"
    else
        tail -n 60 "$build/fuzz_$name.log"
        echo "!! fuzz_$name failed: input in $build/artifacts/$name-*, log in $build/fuzz_$name.log"
        failed+=("$name")
    fi
done
if ((${#failed[@]})); then
    echo "fuzzers that failed: ${failed[*]}"
    exit 1
fi
echo "all fuzzers ran ${seconds}s without a finding"
