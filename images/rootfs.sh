#!/usr/bin/env bash
# CI path for the base image (no registry): a minimal Debian rootfs made with debootstrap and
# imported as a Docker image, to be used as BASE_IMAGE of images/base/Dockerfile.
#   images/rootfs.sh gpulab/rootfs:bookworm        (root, debootstrap, DOCKER_HOST set)
# Deployments with a registry never need this: images/base builds FROM python:3.11-slim-bookworm.
set -euo pipefail
NAME=${1:?usage: images/rootfs.sh IMAGE_NAME}
SUITE=${SUITE:-bookworm}
# the mirror apt already uses on this machine (a snapshot or a local mirror), else Debian's
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "rootfs.sh: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "rootfs.sh: debootstrap needs root" >&2; exit 1; }
WORK=$(mktemp -d /tmp/gpulab-rootfs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
# Machines whose HTTPS is intercepted by a local CA: the image must trust the same extra CAs as
# the host, or pip inside the build fails.
cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$WORK/rootfs" update-ca-certificates >/dev/null 2>&1
rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
tar -C "$WORK/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$NAME" >/dev/null
echo "rootfs.sh: imported $NAME"
