#!/bin/sh
# A local Python base image for deploy/Dockerfile when no image registry is reachable:
# debootstrap (Debian bookworm, minbase + python3 (3.11) + python3-venv + ca-certificates) from this
# machine's own apt mirror, imported with `docker import`.
#
#   sudo deploy/base-image.sh                    # makes textstream-base:bookworm unless it exists
#   docker build -f deploy/Dockerfile --build-arg PYTHON_IMAGE=textstream-base:bookworm -t textstream .
#
# Idempotent: does nothing when the image exists (FORCE=1 rebuilds it). Needs root, debootstrap and
# a running Docker engine. The mirror is the one apt uses on this machine (MIRROR=... overrides it),
# so no host name is written here. pip in the image must trust the same CA bundle as pip on this
# machine (a proxy's CA, say): the bundle pip is configured with here (PIP_CERT, or `pip config`'s
# cert, or the system bundle) is copied into the image and named by PIP_CERT there.
#
# Measured on this project's machine (2 shared cores, 2026-11-30): 3 min 56 s cold, 154 MB. Packages
# come from bookworm itself, not bookworm-security: a base for tests here; where a registry is
# reachable, production images build on python:3.11-slim (the Dockerfile's default).
set -eu

IMAGE=${BASE_IMAGE:-textstream-base:bookworm}
SUITE=bookworm

say() { echo "base-image: $*"; }
die() { echo "base-image: error: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "no docker client on PATH (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd (deploy/container-check.sh does)"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE exists; nothing to do (FORCE=1 rebuilds it)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root (run with sudo)"
command -v debootstrap >/dev/null 2>&1 || die "no debootstrap (apt-get install debootstrap)"

if [ -z "${MIRROR:-}" ]; then
    # The archive apt itself uses for bookworm's main component, whatever the sources format.
    MIRROR=$(apt-cache policy 2>/dev/null | awk -v s="$SUITE/main" '$3 == s && $2 ~ /^(https?|file):/ { print $2; exit }')
    [ -n "$MIRROR" ] || die "no $SUITE mirror in this machine's apt sources; set MIRROR=<archive URL>"
fi

CA=${PIP_CERT:-}
if [ -z "$CA" ] && command -v python3 >/dev/null 2>&1; then
    CA=$(python3 -m pip config get global.cert 2>/dev/null || true)
fi
[ -n "$CA" ] || CA=/etc/ssl/certs/ca-certificates.crt
[ -r "$CA" ] || die "CA bundle $CA not readable (set PIP_CERT to the bundle pip should trust)"

ROOT=$(mktemp -d /var/tmp/textstream-base.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT INT TERM

say "debootstrap $SUITE (minbase, python3, python3-venv, ca-certificates) from $MIRROR into $ROOT"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOT" "$MIRROR" \
    > "$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; die "debootstrap failed (full log: $ROOT.log)"; }
rm -f "$ROOT.log"

say "trimming apt caches, docs and man pages; adding the CA bundle $CA"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
       "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log
mkdir -p "$ROOT/usr/local/share/textstream"
cp "$CA" "$ROOT/usr/local/share/textstream/pip-ca.crt"

say "docker import as $IMAGE"
tar -C "$ROOT" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/usr/local/share/textstream/pip-ca.crt' \
    --change 'CMD ["/usr/bin/python3"]' \
    - "$IMAGE" >/dev/null
say "done: $IMAGE, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
