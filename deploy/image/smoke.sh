#!/usr/bin/env bash
# Smoke test of a built image (make image runs it): as the image's own user, `emd` answers, Debian's OpenSSL
# loads the GOST provider and signs with its engine, a development PKI (GOST keys, certificates, МЧД) is written into /var/lib/emd, and
# `emd worker signer --check` fails as it must without a heartbeat.
#   deploy/image/smoke.sh IMAGE
set -euo pipefail
image=${1:?image}
ctr=$(buildah from -q "$image")
trap 'buildah rm "$ctr" >/dev/null' EXIT
run() { buildah run --isolation chroot --user 10001:10001 "$ctr" -- "$@"; }
run emd --help >/dev/null
run python -c "from services.crypto import libcrypto; assert libcrypto.load_gost_provider(), 'no GOST provider'"
run python -c "from services.crypto import native; assert native.available(), 'no GOST engine: signatures in Python'"
run emd certs dev-config /var/lib/emd/smoke >/dev/null
if run emd worker signer --check >/dev/null 2>&1; then echo "smoke: --check passed without a heartbeat" >&2; exit 1; fi
echo "smoke: $image ok (emd, GOST provider and engine, dev PKI as uid 10001, --check)"
