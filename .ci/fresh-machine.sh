#!/usr/bin/env bash
# README's two commands on a fresh Debian 12 with Debian's python3 (no pyenv,
# no packages installed by hand): a minimal root (.ci/minimal-root.sh) gets a
# copy of this work tree, then
#   scripts/test.sh   (sets the machine up, then every test: C++ build + CTest,
#                     mypy, pytest)
#   scripts/demo.sh   (time limit 120 s; success = it printed the /metrics URL;
#                     on the machine test.sh has set up, as its setup step is
#                     the same scripts/setup.sh and apt alone can take longer)
# so a missing install step fails here, not on a user's machine.
#
#   .ci/fresh-machine.sh [PYTEST ARGS...]   passed on to scripts/test.sh
#   GPE_TEST_WHEEL=dist/...cp311...whl      the wheel for tests/conftest.py
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$root/build/fresh-machine"
chroot_dir="$work/root"
src=/src/gunicorn-prometheus-exporter

trap '"$root/.ci/minimal-root.sh" remove "$chroot_dir"' EXIT
trap 'exit 130' INT TERM
"$root/.ci/minimal-root.sh" remove "$chroot_dir"
rm -rf "$work"
mkdir -p "$work"
"$root/.ci/minimal-root.sh" create "$chroot_dir"
mkdir -p "$chroot_dir$src"
tar -C "$root" --exclude=./build --exclude=./.venv --exclude=./dist --exclude=./.git \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$chroot_dir$src" -xf -
export GPE_ROOT_PIP_CACHE=1
# A repaired cp311 wheel given by .ci/run: the tests that install the
# exporter into further venvs take it instead of compiling one more.
if [ -n "${GPE_TEST_WHEEL:-}" ]; then
    mkdir -p "$chroot_dir/wheels"
    cp "$GPE_TEST_WHEEL" "$chroot_dir/wheels/"
    export GPE_TEST_WHEEL="/wheels/$(basename "$GPE_TEST_WHEEL")"
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== fresh Debian 12 root ($("$root/.ci/minimal-root.sh" run "$chroot_dir" python3 --version)): scripts/test.sh"
start=$SECONDS
"$root/.ci/minimal-root.sh" run "$chroot_dir" /bin/bash -c 'cd "$0" && scripts/test.sh "$@"' "$src" "$@"
echo "   test.sh in the fresh root: $((SECONDS - start)) s"

echo "== fresh Debian 12 root: scripts/demo.sh"
# Until the demo ends by itself: success once it has printed the /metrics URL
# (then its processes in the root are ended), within 120 s.
start=$SECONDS
url='http://[0-9.]+:[0-9]+/metrics'
: >"$work/demo.log"
"$root/.ci/minimal-root.sh" run "$chroot_dir" /bin/bash -c \
    "cd $src && exec timeout 120 scripts/demo.sh --port $(free_port) --metrics-port $(free_port)" \
    >"$work/demo.log" 2>&1 &
demo=$!
while kill -0 "$demo" 2>/dev/null && ! grep -Eq "$url" "$work/demo.log"; do sleep 0.5; done
if kill -0 "$demo" 2>/dev/null; then
    sleep 2  # the excerpt that follows the URL
    "$root/.ci/minimal-root.sh" kill "$chroot_dir"
fi
status=0
wait "$demo" || status=$?
if grep -Eq "$url" "$work/demo.log"; then
    grep -E -A 12 '/metrics is' "$work/demo.log" | sed 's/^/   | /'
    echo "   demo: printed the /metrics URL after $((SECONDS - start)) s (exit $status)"
else
    tail -n 40 "$work/demo.log" >&2
    echo "fresh-machine: scripts/demo.sh did not print the /metrics URL (exit $status)" >&2
    exit 1
fi
