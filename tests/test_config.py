"""Configuration: one reader of the environment, documented defaults, and a README that matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producer.errors import ConfigurationError
from services.config import Settings, settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_need_no_environment():
    """Settings read from an empty environment are the documented local defaults."""
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "" and s.kafka_session_timeout_ms == 6000


def test_environment_values_are_converted_to_the_field_type():
    """Numbers and paths from the environment arrive typed."""
    s = Settings.from_env({"KAFKA_SESSION_TIMEOUT_MS": "45000", "EMD_DATA_DIR": "/var/lib/emd"})
    assert s.kafka_session_timeout_ms == 45000 and s.data_dir == Path("/var/lib/emd")


def test_a_malformed_number_names_the_variable():
    """A value that is not a number fails with the variable's name."""
    with pytest.raises(ConfigurationError, match="KAFKA_SESSION_TIMEOUT_MS"):
        Settings.from_env({"KAFKA_SESSION_TIMEOUT_MS": "six seconds"})


def test_secrets_are_masked_in_the_description():
    """`emd config` never prints a secret's value."""
    rows = dict(
        (env, value) for env, value, _ in Settings.from_env({"EMD_S3_SECRET_KEY": "hunter2"}).describe()
    )
    assert rows["EMD_S3_SECRET_KEY"] == "***"


def test_only_the_config_module_reads_the_environment():
    """No module but services/config.py and the four its docstring names reads os.environ directly."""
    allowed = {
        "services/config.py",
        "services/crypto/keys.py",
        "services/telemetry.py",
        "lab/dev/samples.py",
        "lab/dev/supervisor.py",
    }
    import services.config

    assert all(f"``{name}``" in services.config.__doc__ for name in allowed - {"services/config.py"})
    offenders = []
    for path in [
        *ROOT.glob("services/**/*.py"),
        *ROOT.glob("workers/**/*.py"),
        *ROOT.glob("producer/**/*.py"),
    ]:
        rel = path.relative_to(ROOT).as_posix()
        if rel not in allowed and re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(rel)
    assert offenders == []


def test_readme_configuration_table_matches_the_code():
    """The README's table is exactly what `emd config --markdown` prints."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- config-table[^>]*-->\n(.*?)<!-- /config-table -->", readme, re.S)
    assert block is not None
    assert block.group(1).strip() == settings_table_markdown().strip()


def test_a_password_inside_a_url_is_masked_in_the_description():
    """A database URL's password is masked in `emd config`, its user and host kept."""
    s = Settings.from_env({"EMD_LIFECYCLE_STORE": "postgresql://emd:pw-s3cret@db.example:5432/emd"})
    shown = dict((name, value) for name, value, _ in s.describe())["EMD_LIFECYCLE_STORE"]
    assert shown == "postgresql://emd:***@db.example:5432/emd"
