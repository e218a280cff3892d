"""Keys only where they are used: each process loads the keys of its role alone, starts in a pod that holds
nothing else, and reloads its keys when their files change, without a restart."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from lab.dev.config import put_on_n3, write_dev_config
from producer.errors import PermanentError
from services.config import Settings
from services.documents.store import mark_signer_store, store_from_settings
from services.pipeline import organizations as orgs
from services.pipeline.organizations import ROLES, load_organizations, watch_organizations

OIDS = ["1.2.643.5.1.13.13.12.2.77.9101", "1.2.643.5.1.13.13.12.2.77.9102"]
#: which key kinds each role may hold (docs/security.md, "Keys per pod")
EXPECTED = {
    "signer": {"doctor", "organization"},
    "sender": {"system"},
    "status": {"system"},
    "callbacks": {"system"},
    "console": set(),
}


def _config(directory: Path) -> Path:
    """Two server-mode clinics, the second on N3 with a token file: every kind of secret there is."""
    doctors = ["12345678901", "23456789011"]
    path = write_dev_config(directory, oids=OIDS, doctors=doctors)
    raw = json.loads(path.read_text())
    put_on_n3(raw["organizations"][1], directory, index=1, base_url="http://n3.example", doctors=doctors)
    (directory / "n3-1.token").write_text("n3-secret-token\n")
    path.write_text(json.dumps(raw, ensure_ascii=False))
    return path


def _secret_files(path: Path) -> dict[str, set[Path]]:
    """Each kind of secret → the files that hold it (keys, passwords, tokens) in this configuration."""
    raw = json.loads(path.read_text())
    out: dict[str, set[Path]] = {"doctor": set(), "organization": set(), "system": set(), "n3": set()}
    for org in raw["organizations"]:
        for doctor in org["signing"].get("doctors", {}).values():
            out["doctor"].add(path.parent / doctor["key"])
        if org["signing"].get("organization"):
            out["organization"].add(path.parent / org["signing"]["organization"]["key"])
        out["system"].add(path.parent / org["remd"]["system_key"])
        if org["remd"].get("n3"):
            out["n3"].add(path.parent / org["remd"]["n3"]["token_file"])
    return out


def _pod(tmp_path: Path, role: str) -> Path:
    """The configuration as the pod of ``role`` sees it: every secret file of another role removed."""
    path = _config(tmp_path / role)
    for kind, files in _secret_files(path).items():
        if kind not in ROLES[role]:
            for f in files:
                f.unlink()
    return path


def _held(config) -> set[str]:
    return {kind for _org, kind, cred in config.credentials() if cred.held}


@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_loads_its_keys_alone_where_no_other_key_exists(tmp_path, role):
    """In a pod holding only its role's secrets the role's load succeeds, its keys sign and any other key is
    refused as KEY_NOT_HELD (the signer: doctors and organisations; sender, status, callbacks: the ИС; the
    console: nothing)."""
    config = load_organizations(_pod(tmp_path, role), role=role)
    assert _held(config) == EXPECTED[role]
    for _org, kind, cred in config.credentials():
        if kind in EXPECTED[role]:
            assert cred.signer().sign_digest(b"\x01" * 32)
        else:
            with pytest.raises(PermanentError) as exc:
                cred.signer()
            assert exc.value.reason == "KEY_NOT_HELD"
    token = config.organization(OIDS[1]).remd.n3.token
    assert token == ("n3-secret-token" if role in ("sender", "status") else "")


def test_without_a_role_every_key_is_loaded_and_another_roles_pod_would_not_start(tmp_path):
    """The command-line tools load everything; loading everything in the callback pod fails on the first
    missing doctor's key, which is why each process names its role."""
    full = load_organizations(_config(tmp_path / "all"))
    assert _held(full) == {"doctor", "organization", "system"}
    with pytest.raises(Exception, match="no such file"):
        load_organizations(_pod(tmp_path, "callbacks"))


def _settings(path: Path, tmp_path: Path, **kw) -> Settings:
    return Settings.from_env(
        {},
        organizations_file=path,
        data_dir=tmp_path / "data",
        signer_processes=1,
        kafka_bootstrap_servers="127.0.0.1:1",
        ips_certificates=str(path.parent / "ca.pem"),  # any certificate: the callback service pins one
        **kw,
    )


def _spy(monkeypatch, module) -> list:
    """Record every configuration ``module`` loads, with the role it asked for."""
    loaded = []
    real = module.load_organizations

    def load(*args, **kw):
        config = real(*args, **kw)
        loaded.append((kw.get("role"), config))
        return config

    monkeypatch.setattr(module, "load_organizations", load)
    return loaded


@pytest.mark.parametrize("role", ["signer", "sender", "status", "callbacks", "console"])
def test_each_process_starts_in_a_pod_holding_only_its_roles_keys(tmp_path, monkeypatch, role):
    """The signer's, the sender's, the status worker's and the callback service's apps and the console are built
    from a configuration whose other roles' key files are absent, and each asked for its own role's keys."""
    path = _pod(tmp_path, role)
    settings = _settings(path, tmp_path)
    if role == "signer":
        from workers.signer import worker as module
    elif role == "sender":
        from workers.sender import worker as module
    elif role == "status":
        from workers.status import worker as module
    elif role == "callbacks":
        from workers.callbacks import worker as module
    else:
        module = orgs  # console_cmd imports them when it builds the console
    monkeypatch.setattr(module, "watch_organizations", lambda *a, **kw: threading.Event())
    loaded = _spy(monkeypatch, module)
    if role in ("signer", "sender", "status", "callbacks"):
        mark_signer_store(store_from_settings(settings))
        module.build(settings)  # the App is built, not run: what it loaded is what the process would hold
    else:
        from services.commands.console_cmd import build_console

        console = build_console(settings)
        console.index.stop()
        console.lifecycle.close()
        console.tables.close()
    assert [r for r, _ in loaded] == [role]
    assert _held(loaded[0][1]) == EXPECTED[role]


def test_the_callback_service_signs_replies_with_the_information_system_keys_alone(tmp_path):
    """In the callback pod (ИС keys only) the reply keys are every organisation's ИС key, and nothing else."""
    from services.pipeline.callback_endpoint import reply_credentials

    config = load_organizations(_pod(tmp_path, "callbacks"), role="callbacks")
    keys = reply_credentials(config)
    systems = {org.remd.system.certificate.der for org in config.organizations.values()}
    assert {c.certificate.der for c in keys.credentials} == systems


# --- reloading without a restart -----------------------------------------------------------------------


class SecretVolume:
    """A directory laid out as the kubelet writes a Secret or projected volume: each file a symlink through
    ``..data`` to a timestamped directory, and an update an atomic swap of ``..data`` (AtomicWriter)."""

    def __init__(self, root: Path) -> None:
        self.root, self.version = root, 0
        root.mkdir(parents=True)

    def publish(self, source: Path) -> None:
        self.version += 1
        target = self.root / f"..2026_12_07_10_00_0{self.version}"
        shutil.copytree(source, target)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / "..data")
        for name in os.listdir(target):
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        for old in self.root.glob("..2026_*"):
            if old != target:
                shutil.rmtree(old)


def test_a_rotated_key_and_an_added_clinic_are_reloaded_in_place(tmp_path):
    """A Secret volume updated in place (a new ИС key for clinic 1, and a third clinic) is picked up by the loaded
    configuration, listeners are told, and the old key no longer signs."""
    source = tmp_path / "source"
    path = _config(source)
    volume = SecretVolume(tmp_path / "etc-emd")
    volume.publish(source)
    config = load_organizations(volume.root / "organizations.json", role="callbacks")
    old_cert = config.organization(OIDS[0]).remd.system.certificate.der
    seen = []
    config.on_reload(lambda c: seen.append(sorted(c.organizations)))
    assert config.reload_if_changed() is False  # nothing changed yet

    # the operator rotates clinic 1's ИС key and adds a clinic: a new version of the Secret
    newer = tmp_path / "newer"
    write_dev_config(newer, oids=[*OIDS, "1.2.643.5.1.13.13.12.2.77.9103"], doctors=["12345678901"])
    shutil.rmtree(source)
    shutil.copytree(newer, source)
    volume.publish(source)

    assert config.reload_if_changed() is True
    assert sorted(config.organizations) == sorted([*OIDS, "1.2.643.5.1.13.13.12.2.77.9103"])
    assert config.organization(OIDS[0]).remd.system.certificate.der != old_cert
    assert seen == [sorted(config.organizations)]
    assert config.reload_if_changed() is False
    assert path.name == "organizations.json"


def test_a_broken_new_version_is_refused_and_the_running_one_kept(tmp_path):
    """A new version whose key does not match its certificate is logged and counted; the loaded keys stay."""
    source = tmp_path / "source"
    _config(source)
    volume = SecretVolume(tmp_path / "etc-emd")
    volume.publish(source)
    config = load_organizations(volume.root / "organizations.json", role="callbacks")
    before = {oid: o.remd.system.certificate.der for oid, o in config.organizations.items()}
    raw = json.loads((source / "organizations.json").read_text())
    raw["organizations"][0]["remd"]["system_key"] = raw["organizations"][1]["remd"]["system_key"]
    (source / "organizations.json").write_text(json.dumps(raw))
    volume.publish(source)
    refused = orgs.RELOADS.labels("refused")._value.get()
    assert config.reload_if_changed() is False
    assert orgs.RELOADS.labels("refused")._value.get() == refused + 1
    assert {oid: o.remd.system.certificate.der for oid, o in config.organizations.items()} == before
    assert config.organization(OIDS[0]).remd.system.signer()


def test_the_watcher_reloads_without_being_asked(tmp_path):
    """watch_organizations notices a changed file by itself, within its interval."""
    import time

    source = tmp_path / "source"
    _config(source)
    volume = SecretVolume(tmp_path / "etc-emd")
    volume.publish(source)
    config = load_organizations(volume.root / "organizations.json", role="console")
    stop = watch_organizations(config, interval=0.05)
    try:
        raw = json.loads((source / "organizations.json").read_text())
        raw["organizations"][0]["name"] = "Переименованная клиника"
        (source / "organizations.json").write_text(json.dumps(raw, ensure_ascii=False))
        volume.publish(source)
        deadline = time.monotonic() + 30
        while config.organization(OIDS[0]).name != "Переименованная клиника" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert config.organization(OIDS[0]).name == "Переименованная клиника"
