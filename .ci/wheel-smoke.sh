#!/usr/bin/env bash
# The wheel on a machine with nothing but Debian 12's python3: a minimal root
# (debootstrap minbase + python3 python3-venv, .ci/minimal-root.sh), a fresh
# venv, `pip install <wheel>` (no compiler, no -dev package there), the
# bundled libraries checked with ldd, then README's "With Gunicorn" lines
# for real: exact request counts from /metrics, HTTPS with certificates made
# here by openssl, gzip, and the Redis mirror to a redis-server running
# outside the root on a loopback port (the root shares the network).
#
#   .ci/wheel-smoke.sh [WHEEL]   default: dist/'s cp311 manylinux wheel
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

wheel="${1:-$(ls dist/gunicorn_prometheus_exporter-*-cp311-cp311-manylinux*.whl 2>/dev/null | head -n1)}"
[ -f "$wheel" ] || { echo "wheel-smoke: no wheel (run scripts/build-wheel.sh 3.11)" >&2; exit 1; }
wheel="$(realpath "$wheel")"

work="$root/build/wheel-smoke"
chroot_dir="$work/root"
redis_pid=""
cleanup() {
    [ -z "$redis_pid" ] || { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }
    "$root/.ci/minimal-root.sh" remove "$chroot_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$root/.ci/minimal-root.sh" remove "$chroot_dir"
rm -rf "$work"
mkdir -p "$work"

# Certificates: a CA and a server certificate for 127.0.0.1, made here.
certs="$work/certs"
mkdir -p "$certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=wheel smoke CA" \
    -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$certs/ext.cnf"
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
    -days 2 -extfile "$certs/ext.cnf" -out "$certs/server.pem" 2>/dev/null

# redis-server outside the root, on a free loopback port.
command -v redis-server >/dev/null || "$root/scripts/setup.sh" --apt-only
redis_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done
redis-cli -p "$redis_port" ping | grep -q PONG

"$root/.ci/minimal-root.sh" create "$chroot_dir"
mkdir -p "$chroot_dir/smoke"
cp "$wheel" "$chroot_dir/smoke/"
cp -r "$certs" "$chroot_dir/smoke/certs"
cp "$root/.ci/wheel_smoke_check.py" "$chroot_dir/smoke/"

echo "== wheel smoke test in a minimal Debian 12 root: $(basename "$wheel")"
"$root/.ci/minimal-root.sh" run "$chroot_dir" /bin/bash -euo pipefail -c '
    # Nothing to compile with: what the wheel needs, it brings.
    for tool in gcc g++ cc c++ cmake pkg-config; do
        ! command -v "$tool" >/dev/null || { echo "the minimal root has $tool" >&2; exit 1; }
    done
    for path in /usr/include/python3*/Python.h /usr/include/hiredis /usr/include/openssl /usr/include/httplib.h \
                /usr/lib/x86_64-linux-gnu/libhiredis* /usr/lib/x86_64-linux-gnu/libcpp-httplib*; do
        [ ! -e "$path" ] || { echo "the minimal root has $path" >&2; exit 1; }
    done
    echo "   $(python3 --version), no compiler, no -dev package"

    python3 -m venv /smoke/venv
    /smoke/venv/bin/pip install -q --disable-pip-version-check /smoke/*.whl
    echo "   installed: $(/smoke/venv/bin/pip list --format=freeze 2>/dev/null | grep -iE "^(gunicorn|prometheus|pyyaml)" | tr "\n" " ")"

    package="$(/smoke/venv/bin/python -c "import gunicorn_prometheus_exporter as p, os; print(os.path.dirname(p.__file__))")"
    for elf in "$package/bin/gunicorn-prometheus-agent" "$package"/_native*.so; do
        if ldd "$elf" | grep -q "not found"; then ldd "$elf" >&2; exit 1; fi
        for lib in ssl crypto; do
            ldd "$elf" | grep -E "lib$lib[.-]" | grep -q "gunicorn_prometheus_exporter.libs/" ||
                { echo "$elf does not load lib$lib from the wheel" >&2; ldd "$elf" >&2; exit 1; }
        done
    done
    ldd "$package"/_native*.so | grep -E "libhiredis" | grep -q "gunicorn_prometheus_exporter.libs/"
    echo "   ldd: the agent and the extension load OpenSSL (and the extension hiredis) from the wheel"
    /smoke/venv/bin/gunicorn-prometheus-agent --help | head -n 1
    cd /smoke
    /smoke/venv/bin/python /smoke/wheel_smoke_check.py --redis-port '"$redis_port"' --certs /smoke/certs --work /smoke/work
' | tee "$work/check.log"

# The mirror reached the Redis outside the root.
prefix="$(sed -n 's/^REDIS_PREFIX=//p' "$work/check.log")"
keys="$(redis-cli -p "$redis_port" --scan --pattern "$prefix:*" | wc -l)"
[ "$keys" -gt 0 ] || { echo "wheel-smoke: no $prefix:* keys in the Redis outside the root" >&2; exit 1; }
echo "   the Redis outside the root holds $keys keys of the instance"
echo "wheel smoke test: passed"
