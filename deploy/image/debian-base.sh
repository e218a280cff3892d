#!/usr/bin/env bash
# Make the Dockerfile's base image (debian:bookworm-slim) locally from Debian's own packages, for a machine
# that reaches the Debian archive but no container registry. debootstrap's minbase is what the official
# slim image is made of; the result is tagged with the official name so the Dockerfile stays unchanged.
#   deploy/image/debian-base.sh [BUILDER]        (BUILDER: buildah, the default)
set -euo pipefail
tag=docker.io/library/debian:bookworm-slim
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v debootstrap >/dev/null || { echo "installing debootstrap"; apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
echo "debootstrap bookworm (minbase) into $work/rootfs ..."
debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
cp -a "$work/rootfs/." "$mnt/"
buildah umount "$ctr" >/dev/null
buildah config --cmd /bin/bash "$ctr"
buildah commit -q "$ctr" "$tag" >/dev/null
buildah rm "$ctr" >/dev/null
echo "base image: $tag"
