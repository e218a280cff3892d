"""services.messaging.trust: the Kafka CA a process loaded, and when it expires, as a gauge the alerts read."""

from __future__ import annotations

import datetime as dt

from lab.dev.pki import DevCA
from services.messaging.trust import KAFKA_CA_NOT_AFTER, latest_not_after, observe_kafka_ca


def test_a_bundle_of_the_old_and_the_renewed_ca_counts_until_the_last_expires(tmp_path):
    """With the old CA and its renewal in one file (trust-manager's bundle during a renewal), the gauge is the
    later notAfter: the process can reach the brokers until then."""
    soon = dt.datetime(2027, 1, 10, tzinfo=dt.UTC)
    later = dt.datetime(2028, 1, 1, tzinfo=dt.UTC)
    old, renewed = DevCA.create("cluster-ca", not_after=soon), DevCA.create("cluster-ca", not_after=later)
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(old.certificate.to_pem() + renewed.certificate.to_pem())
    assert later.timestamp() == latest_not_after(bundle.read_bytes())
    observe_kafka_ca(str(bundle))
    assert later.timestamp() == KAFKA_CA_NOT_AFTER._value.get()


def test_no_ca_file_or_no_certificate_leaves_the_gauge_alone(tmp_path):
    """Plaintext Kafka (no KAFKA_SSL_CA_FILE), a missing file or a file without a certificate set nothing."""
    KAFKA_CA_NOT_AFTER.set(123.0)
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    for ca_file in ("", str(tmp_path / "missing.pem"), str(tmp_path / "empty.pem")):
        observe_kafka_ca(ca_file)
    assert 123.0 == KAFKA_CA_NOT_AFTER._value.get()
