#!/usr/bin/env bash
# A minimal Debian 12 root (debootstrap --variant=minbase bookworm, plus only
# python3 and python3-venv) for tests that must not see this machine's
# compilers, -dev packages, pyenv or virtual environments.
#
#   .ci/minimal-root.sh create DIR          a fresh root in DIR (from the cache)
#   .ci/minimal-root.sh run DIR CMD [ARG..] CMD inside DIR (chroot), as root,
#                                           with /proc, /sys, /dev, /dev/shm
#                                           mounted for the command only
#   .ci/minimal-root.sh kill DIR            end the processes running inside DIR
#   .ci/minimal-root.sh remove DIR          end them, unmount, delete DIR
#
# The debootstrap result is cached as a tarball under
# /var/cache/gunicorn-prometheus-exporter (override: GPE_ROOT_CACHE), keyed by
# the mirror, the suite and the package list; it is written under a temporary
# name and renamed when complete, and never changed afterwards (made again
# when a week old): every root is a fresh extraction, so one test run cannot
# leak into the next.
#
# The mirror, apt sources, pip configuration and CA bundle are this machine's,
# read and copied in at run time. Downloaded .deb files are kept between runs
# in the cache (bind-mounted at the root's /var/cache/apt/archives), and with
# GPE_ROOT_PIP_CACHE=1 pip's cache too (not for the wheel smoke test, which
# must not find wheels that another root compiled).
set -euo pipefail

suite=bookworm
include=python3,python3-venv
cache="${GPE_ROOT_CACHE:-/var/cache/gunicorn-prometheus-exporter}"

die() { echo "minimal-root: $*" >&2; exit 1; }

# The first Debian mirror of this machine's apt sources (deb822 .sources
# files, then the one-line format).
mirror() {
    local uri
    uri="$(awk '
        /^[[:space:]]*$/ { if (uris != "" && suites ~ /(^| )'"$suite"'( |$)/) { print uris; exit } uris = ""; suites = ""; next }
        tolower($1) == "uris:" { uris = $2 }
        tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
        END { if (uris != "" && suites ~ /(^| )'"$suite"'( |$)/) print uris }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 ~ / '"$suite"' / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || die "no $suite mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    echo "$uri"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# Prints the cached tarball's path, building it first if needed.
cached_tarball() {
    local uri key tarball tmp
    uri="$(mirror)"
    key="$(printf '%s\n' "$suite" minbase "$include" "$uri" | sha256sum | cut -c1-16)"
    tarball="$cache/$suite-minbase-$key.tar"
    # A week old: made again, so that the roots follow Debian's point releases.
    if [ -n "$(find "$tarball" -mtime +7 2>/dev/null)" ]; then
        rm -f "$tarball"
    fi
    if [ -s "$tarball" ]; then
        echo "$tarball"
        return
    fi
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    if [ ! -s "$tarball" ]; then
        ensure_debootstrap
        tmp="$(mktemp -d "$cache/debootstrap.XXXXXX")"
        echo "minimal-root: debootstrap --variant=minbase --include=$include $suite (cached afterwards in $cache)" >&2
        if ! debootstrap --variant=minbase --include="$include" "$suite" "$tmp/root" "$uri" >"$tmp/debootstrap.log" 2>&1; then
            tail -n 30 "$tmp/debootstrap.log" >&2
            rm -rf "$tmp"
            die "debootstrap failed"
        fi
        rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"* 2>/dev/null || true
        tar -C "$tmp/root" --numeric-owner -cf "$tmp/root.tar" .
        mv "$tmp/root.tar" "$tarball"
        rm -rf "$tmp"
    fi
    flock -u 9
    echo "$tarball"
}

mounted_under() {  # mount points at or below $1, deepest first
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

kill_inside() {  # processes whose root is $1 (started by our commands there)
    local dir="$1" pid root round
    for round in TERM KILL; do
        local found=0
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            root="$(readlink "/proc/$pid/root" 2>/dev/null)" || continue
            if [ "$root" = "$dir" ]; then
                kill -s "$round" "$pid" 2>/dev/null && found=1
            fi
        done
        [ "$found" = 1 ] || return 0
        sleep 1
    done
}

unmount_all() {
    local dir="$1" m
    kill_inside "$dir"
    for m in $(mounted_under "$dir"); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}

create() {
    local dir="$1" tarball
    [ ! -e "$dir" ] || die "$dir exists (remove it first)"
    tarball="$(cached_tarball)"
    mkdir -p "$dir"
    tar -C "$dir" --numeric-owner -xf "$tarball"
    # This machine's apt sources, pip configuration and CA bundle.
    rm -f "$dir/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/*.sources "$dir/etc/apt/sources.list.d/" 2>/dev/null || true
    [ ! -f /etc/apt/sources.list ] || cp /etc/apt/sources.list "$dir/etc/apt/sources.list"
    cp -a /etc/apt/apt.conf.d/. "$dir/etc/apt/apt.conf.d/" 2>/dev/null || true
    # The package cache stays in the cache directory (a bind mount): keep it.
    rm -f "$dir/etc/apt/apt.conf.d/docker-clean"
    [ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$dir/etc/pip.conf"
    if [ -d /etc/xdg/pip ]; then
        mkdir -p "$dir/etc/xdg"
        cp -a /etc/xdg/pip "$dir/etc/xdg/"
    fi
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$dir/etc/ssl/certs"
        cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
    fi
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
    cp /etc/hosts "$dir/etc/hosts"
}

run() {
    local dir
    dir="$(realpath "$1")"
    shift
    [ -x "$dir/bin/sh" ] || die "$dir is not a root (create it first)"
    mkdir -p "$cache/apt-archives/partial" "$dir/var/cache/apt/archives"
    run_dir="$dir"
    trap 'unmount_all "$run_dir"' EXIT
    trap 'exit 130' INT TERM
    mount -t proc proc "$dir/proc"
    mount --bind /sys "$dir/sys"
    mount --bind /dev "$dir/dev"
    mount --bind /dev/shm "$dir/dev/shm"
    mount --bind /dev/pts "$dir/dev/pts"
    mount --bind "$cache/apt-archives" "$dir/var/cache/apt/archives"
    if [ -n "${GPE_ROOT_PIP_CACHE:-}" ]; then  # pip's download cache, for roots that build from source
        mkdir -p "$cache/pip" "$dir/root/.cache/pip"
        mount --bind "$cache/pip" "$dir/root/.cache/pip"
    fi
    # A clean environment: nothing of this machine's PATH (pyenv) or virtual
    # environments, only pip's and the proxies' settings and CI.
    local -a keep=()
    local name
    for name in $(compgen -e); do
        case "$name" in
            # a find-links directory of this machine is not in the root
            PIP_FIND_LINKS) [[ "${!name}" == *://* || -e "$dir${!name}" ]] && keep+=("$name=${!name}") ;;
            PIP_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|CI|GPE_*) keep+=("$name=${!name}") ;;
        esac
    done
    local status=0
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        TERM="${TERM:-dumb}" "${keep[@]}" chroot "$dir" "$@" || status=$?
    return "$status"
}

remove() {
    local dir
    [ -e "$1" ] || return 0
    dir="$(realpath "$1")"
    unmount_all "$dir"
    if [ -n "$(mounted_under "$dir")" ]; then
        die "still mounted under $dir"
    fi
    rm -rf --one-file-system "$dir"
}

case "${1:-}" in
    create) [ $# -eq 2 ] || die "usage: $0 create DIR"; create "$2" ;;
    run) [ $# -ge 3 ] || die "usage: $0 run DIR CMD [ARG...]"; shift; run "$@" ;;
    remove) [ $# -eq 2 ] || die "usage: $0 remove DIR"; remove "$2" ;;
    kill) [ $# -eq 2 ] || die "usage: $0 kill DIR"; kill_inside "$(realpath "$2")" ;;
    tarball) cached_tarball ;;
    *) die "usage: $0 create|run|remove DIR ..." ;;
esac
