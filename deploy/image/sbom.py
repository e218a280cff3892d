"""The image's SBOM: the Python distributions of /opt/emd (CycloneDX, made in the build stage by cyclonedx-py) and
the Debian packages of the final image (dpkg's list), in one CycloneDX 1.6 JSON document about the image.

    python3 deploy/image/sbom.py --python sbom-python.cdx.json --dpkg dpkg.tsv --image NAME --digest sha256:… -o OUT

``dpkg.tsv``: ``dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\n'`` run in the image. Standard
library only: `make image` runs it with the host's Python.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

DISTRO = "debian-12"


def deb_components(dpkg_list: str) -> list[dict[str, Any]]:
    """A CycloneDX component per line of dpkg's list (name, version, architecture), with its package URL."""
    components = []
    for line in dpkg_list.splitlines():
        if not line.strip():
            continue
        name, version, arch = line.split("\t")
        purl = f"pkg:deb/debian/{name}@{quote(version, safe='')}?arch={arch}&distro={DISTRO}"
        components.append(
            {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        )
    return components


def merge(python_sbom: dict[str, Any], dpkg_list: str, *, image: str, digest: str) -> dict[str, Any]:
    """The Python SBOM with the Debian packages added, described as the container image ``image@digest``."""
    doc = dict(python_sbom)
    application = doc.get("metadata", {}).get("component")
    doc["metadata"] = {
        **doc.get("metadata", {}),
        "component": {
            "type": "container",
            "bom-ref": f"{image}@{digest}",
            "name": image,
            "version": digest,
            **({"components": [application]} if application else {}),
        },
    }
    doc["components"] = [*doc.get("components", []), *deb_components(dpkg_list)]
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/image/sbom.py", description=__doc__)
    parser.add_argument(
        "--python", required=True, type=Path, help="the build stage's CycloneDX JSON of /opt/emd"
    )
    parser.add_argument("--dpkg", required=True, type=Path, help="dpkg-query's list from the image")
    parser.add_argument("--image", required=True, help="the image's name (registry/repository:tag)")
    parser.add_argument("--digest", required=True, help="the image's digest (sha256:…)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="where the SBOM goes")
    args = parser.parse_args(argv)
    try:
        python_sbom = json.loads(args.python.read_text(encoding="utf-8"))
        dpkg_list = args.dpkg.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        print(f"sbom: {exc}", file=sys.stderr)
        return 2
    doc = merge(python_sbom, dpkg_list, image=args.image, digest=args.digest)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"sbom: {args.output} ({len(doc['components'])} components)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
