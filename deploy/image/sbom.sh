#!/usr/bin/env bash
# The image's SBOM (make image runs it after the build): the Python distributions the build stage listed
# (/usr/share/doc/emd-pipeline/sbom-python.cdx.json in the image) and the image's Debian packages, merged by
# deploy/image/sbom.py into one CycloneDX JSON about the image and its digest.
#   deploy/image/sbom.sh IMAGE OUT
set -euo pipefail
image=${1:?image}
out=${2:?output file}
work=$(mktemp -d)
ctr=$(buildah from -q "$image")
trap 'buildah rm "$ctr" >/dev/null; rm -rf "$work"' EXIT
run() { buildah run --isolation chroot "$ctr" -- "$@"; }
run cat /usr/share/doc/emd-pipeline/sbom-python.cdx.json >"$work/python.cdx.json"
run dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' >"$work/dpkg.tsv"
digest=$(buildah images --no-trunc --digests --format '{{.Digest}}' "$image" | head -1)
python3 "$(dirname "$0")/sbom.py" --python "$work/python.cdx.json" --dpkg "$work/dpkg.tsv" \
  --image "$image" --digest "$digest" -o "$out"
