"""The container image's inputs: hash-locked requirements that agree with pyproject.toml, and its SBOM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "deploy" / "image"
LOCK = IMAGE / "requirements.txt"


def _requirement(line: str) -> tuple[str, str]:
    name, _, version = line.split(" ")[0].partition("==")
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(), version


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name → (version, sha256 hashes) of a pip-compile --generate-hashes file."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            current = _requirement(line)
            out[current[0]] = (current[1], [])
        elif current is not None and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            out[current[0]][1].append(h.group(1))
    return out


def test_every_locked_requirement_is_pinned_and_hashed():
    """Each line of the image's lock pins one version (==) and carries at least one sha256."""
    lock = locked(LOCK)
    assert len(lock) > 20
    assert [] == [n for n, (v, hashes) in lock.items() if not v or not hashes]
    assert (
        "setuptools" in lock and "wheel" in lock
    )  # the build backend: nothing fetched unpinned at build time


def test_the_lock_agrees_with_pyproject():
    """Every runtime dependency pinned in pyproject.toml is in the lock (and its input) at that very version, and
    the МИС library's ranges admit the locked versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(_requirement(d) for d in project if not d.startswith("emd-producer"))
    lock = locked(LOCK)
    assert {n: v for n, v in pinned.items()} == {n: lock[n][0] for n in pinned}
    wanted = dict(
        _requirement(line) for line in (IMAGE / "requirements.in").read_text().splitlines() if "==" in line
    )
    assert pinned == wanted
    from packaging.requirements import Requirement

    for spec in tomllib.loads((ROOT / "producer" / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(spec)
        assert req.specifier.contains(lock[_requirement(req.name + "==")[0]][0]), spec


@pytest.mark.integration
def test_the_image_requirements_install_with_require_hashes(tmp_path):
    """pip accepts the lock in hash-checking mode: every file matches its sha256 and every transitive dependency is
    listed (pip refuses an unhashed or unlisted one), as the image's build does."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--require-hashes",
            "--report",
            str(tmp_path / "report.json"),
            "-r",
            str(LOCK),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # below the per-test timeout, so a hung index shows as this wait (4 s when measured)
    )
    assert 0 == done.returncode, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    resolved = {
        re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
        for i in report["install"]
    }
    assert {n: v for n, (v, _) in locked(LOCK).items()} == resolved


@pytest.mark.integration
def test_a_wrong_hash_is_refused(tmp_path):
    """The check above can fail: a requirement whose listed hash matches no file of it makes pip refuse."""
    version, _ = locked(LOCK)["sniffio"]
    spoiled = tmp_path / "requirements.txt"
    spoiled.write_text(f"sniffio=={version} --hash=sha256:{'0' * 64}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(spoiled),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 != done.returncode and "DO NOT MATCH THE HASHES" in done.stderr


@pytest.mark.integration
def test_make_image_writes_an_sbom_of_the_python_packages_and_the_debian_ones(tmp_path):
    """`make image` runs deploy/image/sbom.sh after the build, which merges what the build stage's cyclonedx-py wrote
    with the image's Debian packages: here the same two steps on this venv and a dpkg list give one CycloneDX 1.6
    document about the image, with every locked distribution and every Debian package as a component."""
    dry = subprocess.run(["make", "-n", "image"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "deploy/image/sbom.sh" in dry and "build/sbom.cdx.json" in dry
    assert "cyclonedx-py environment" in (ROOT / "Dockerfile").read_text()
    python_sbom = tmp_path / "python.cdx.json"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "cyclonedx-py"),
            "environment",
            "--pyproject",
            str(ROOT / "pyproject.toml"),
            "--output-reproducible",
            "--output-format",
            "JSON",
            "--output-file",
            str(python_sbom),
            sys.executable,
        ],
        check=True,
        capture_output=True,
    )
    dpkg = tmp_path / "dpkg.tsv"
    dpkg.write_text("libengine-gost-openssl\t3.0.3-1\tamd64\npython3\t3.11.2-1+b1\tamd64\n")
    out = tmp_path / "sbom.cdx.json"
    subprocess.run(
        [
            sys.executable,
            str(IMAGE / "sbom.py"),
            "--python",
            str(python_sbom),
            "--dpkg",
            str(dpkg),
            "--image",
            "emd-pipeline:0.1.0",
            "--digest",
            "sha256:" + "a" * 64,
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    doc = json.loads(out.read_text())
    assert ("CycloneDX", "1.6") == (doc["bomFormat"], doc["specVersion"])
    image = doc["metadata"]["component"]
    assert ("container", "sha256:" + "a" * 64) == (image["type"], image["version"])
    assert "emd-pipeline" == image["components"][0]["name"]
    purls = {c.get("purl") for c in doc["components"]}
    assert "pkg:deb/debian/libengine-gost-openssl@3.0.3-1?arch=amd64&distro=debian-12" in purls
    names = {re.sub(r"[-_.]+", "-", c["name"]).lower() for c in doc["components"]}
    assert set(locked(LOCK)) - {"setuptools", "wheel"} <= names
