#!/bin/sh
# The container suite from nothing, on a Debian machine without an image registry:
#   1. Debian's docker.io (engine) and debootstrap, installed with apt-get when missing (root only);
#   2. dockerd started in the background when no engine answers (log: /var/log/textstream-dockerd.log);
#   3. the local base image (deploy/base-image.sh; skipped when it exists);
#   4. both images of deploy/Dockerfile built on it (`worker` and the default `trainer` target);
#   5. tests/containers (pytest -m containers): trainer, workers, rebalance, docker stop, uid, volume,
#      and docker-compose.yml brought up with tests/containers/compose.local.yml (test_compose.py).
# Each step prints its time. Run from anywhere, as root:
#   deploy/container-check.sh                      (PYTHON=... picks the interpreter; default .venv)
# The suite starts a local Kafka broker like the integration tests (TEXTSTREAM_KAFKA_HOME as for them).
set -eu
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
BASE=${TEXTSTREAM_PYTHON_IMAGE:-textstream-base:bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/textstream-dockerd.log}

say() { echo "container-check: $*"; }
die() { echo "container-check: error: $*" >&2; exit 1; }
t0=$(date +%s); step=$t0
took() { now=$(date +%s); say "$1 in $((now - step)) s"; step=$now; }

missing=""
command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing="$missing docker.io"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        || die "missing$missing; install them with: sudo apt-get install docker.io debootstrap"
    say "installing Debian packages:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    took "packages installed"
fi

if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and only root can start one (sudo dockerd &)"
    say "starting dockerd (overlay2; log $DOCKERD_LOG)"
    setsid dockerd ${DOCKERD_ARGS:---storage-driver=overlay2} >"$DOCKERD_LOG" 2>&1 </dev/null &
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -le 120 ] || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd did not answer within 60 s"; }
        sleep 0.5
    done
    took "dockerd up"
fi

BASE_IMAGE=$BASE deploy/base-image.sh
took "base image $BASE ready"

for target in worker trainer; do
    tag=$([ $target = worker ] && echo textstream-worker:test || echo textstream:test)
    say "docker build --target $target -t $tag"
    docker build -q --network host -f deploy/Dockerfile --build-arg "PYTHON_IMAGE=$BASE" --target $target -t "$tag" . >/dev/null
    took "image $tag built ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
done

TEXTSTREAM_PYTHON_IMAGE=$BASE "$PY" -m pytest -p no:cacheprovider -m containers tests/containers -rA
took "container suite passed"
say "all done in $(( $(date +%s) - t0 )) s"
