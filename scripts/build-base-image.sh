#!/usr/bin/env bash
# Build a local stand-in for the official `python:3.11-slim-*` base image from Debian packages, for machines that
# reach Debian's package archive but no container registry (this project's CI and dev machines).
#
#   scripts/build-base-image.sh [IMAGE]        # default IMAGE: localhost/kfp-tabular-base:python3.11-bookworm
#
# What it makes: a Debian 12 (bookworm) minbase root filesystem with python3 (3.11, the Python that
# requirements.lock was resolved for) and python3-venv, plus `python` on PATH the way the official image has it,
# committed into buildah's storage as IMAGE. The Dockerfile builds on it unchanged; only the libgomp1 pin differs
# (bookworm ships GCC 12's runtime), and `make image` passes that as a build argument.
#
# Environment:
#   DEBIAN_MIRROR        archive to debootstrap from; default: the first one in this machine's apt sources
#   BUILDAH_STORAGE      buildah --storage-driver (default vfs: works without overlay mounts in a sandbox)
#   FORCE=1              rebuild even when IMAGE exists already
# Needs root (debootstrap), `debootstrap` and `buildah`: `make image` installs both with apt when missing.
set -euo pipefail

IMAGE=${1:-localhost/kfp-tabular-base:python3.11-bookworm}
SUITE=bookworm
STORAGE=${BUILDAH_STORAGE:-vfs}
buildah() { command buildah --storage-driver "$STORAGE" "$@"; }

if [ "${FORCE:-0}" != 1 ] && buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

# The mirror this machine's apt already uses (deb822 `URIs:` or one-line `deb URL suite`), so the script names no
# host of its own and follows whatever archive or proxy the machine is configured for.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" && $2 !~ /security/ {print $2; exit}')
fi
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ {print $2; exit}')
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kfp-tabular-base.XXXXXX)
container=""
cleanup() {
    [ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# minbase: essential packages + apt only (no compilers, no docs beyond what packages ship). python3-venv brings
# ensurepip's bundled pip wheel, which `python -m venv` in the Dockerfile needs.
echo "debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$work/rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

rootfs=$work/rootfs
# The official image has `python` in /usr/local/bin; the Dockerfile calls `python -m venv`.
ln -s /usr/bin/python3 "$rootfs/usr/local/bin/python"
# Like the slim images: no package lists, downloaded .debs or logs in the base.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
# The host's resolver was copied in by debootstrap; the container runtime provides its own.
: > "$rootfs/etc/resolv.conf"

# Import: an empty image, the root filesystem copied into its mount, committed as one layer.
container=$(buildah from scratch)
mnt=$(buildah mount "$container")
cp -a "$rootfs"/. "$mnt"/
buildah umount "$container" >/dev/null
buildah config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label org.opencontainers.image.description="Local stand-in for python:3.11-slim: Debian $SUITE minbase + python3 + python3-venv" \
    "$container"
buildah commit --quiet --rm "$container" "$IMAGE" >/dev/null
container=""
echo "base image $IMAGE: $(buildah images --format '{{.Size}}' "$IMAGE")"
