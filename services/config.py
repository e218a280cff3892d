"""Every setting the pipeline reads from the environment, with its default, in one place.

``Settings.from_env()`` reads every setting. Besides it, only these read ``os.environ``, none of them for
a setting (``tests/test_config.py`` holds the same list and fails on any other reader):

* ``services/crypto/keys.py`` (``read_password``): a key's password from the variable the organisations
  file or ``emd sign --password-env`` names, so a secret need not sit in a file;
* ``services/telemetry.py``: whether the standard ``OTEL_*`` variables ask for tracing; the OpenTelemetry SDK
  reads them itself (exporter endpoint, sampler, service name: docs/operations.md);
* ``lab/dev/samples.py``: ``EMD_SHARED_DIR``, where development tooling finds the full sample corpus;
* ``lab/dev/supervisor.py``: passes the whole environment on to the local pipeline's child processes.

Each field documents its variable; ``emd config`` prints the effective values
(secrets masked). Defaults are the local development set-up: a broker spawned on loopback,
the РЭМД emulator, short consumer-group timeouts. Production overrides them (deploy/k8s).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from producer.claimcheck import INLINE_DOCUMENT_LIMIT, MAX_DOCUMENT_BYTES
from producer.errors import ConfigurationError

_SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _env_name(f: dataclasses.Field) -> str:
    return f.metadata["env"]


def setting(env: str, default: Any, doc: str) -> Any:
    """Declare a setting read from ``env`` (documented by ``doc``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.copy, default), metadata={"env": env, "doc": doc})
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "",
        "Kafka bootstrap servers. Empty: commands that need a broker spawn the local Tansu broker.",
    )
    kafka_client_id: str = setting("KAFKA_CLIENT_ID", "emd-pipeline", "Kafka client id prefix.")
    kafka_client: str = setting(
        "EMD_KAFKA_CLIENT",
        "aiokafka",
        "The Kafka client library of the workers' runtime: aiokafka or confluent (librdkafka); the same "
        "commit discipline, rebalance handling and security either way (docs/architecture.md).",
    )
    mis_id: str = setting(
        "EMD_MIS_ID",
        "",
        "The МИС `emd publish` and `emd clinic test` publish as (its topic emd.document.created.<id>, granted in "
        "the organisations file's mis list). Empty: `emd publish` needs --mis; `emd clinic test` takes the МИС "
        "granted the organisation.",
    )
    kafka_session_timeout_ms: int = setting(
        "KAFKA_SESSION_TIMEOUT_MS",
        6000,
        "Consumer-group session timeout. Short by default: the local broker holds a JoinGroup for half "
        "of it (docs/architecture.md). Production: 45000.",
    )
    kafka_heartbeat_interval_ms: int = setting(
        "KAFKA_HEARTBEAT_INTERVAL_MS", 2000, "Consumer heartbeat interval (one third of the session timeout)."
    )
    kafka_max_poll_interval_ms: int = setting(
        "KAFKA_MAX_POLL_INTERVAL_MS",
        300000,
        "Longest a worker may go between polls before it leaves the group.",
    )
    kafka_topic_partitions: int = setting(
        "KAFKA_TOPIC_PARTITIONS", 6, "Partitions of each pipeline topic when the pipeline creates it."
    )
    kafka_replication_factor: int = setting(
        "KAFKA_REPLICATION_FACTOR", 1, "Replication factor of topics the pipeline creates (3 in production)."
    )
    kafka_enable_idempotence: bool | None = setting(
        "KAFKA_ENABLE_IDEMPOTENCE",
        None,
        "Idempotent producers in the workers (acks=all either way). Unset: on, unless the broker refuses them "
        "(the local Tansu broker answers aiokafka's InitProducerId with UnknownError): then off, with a warning; "
        "downstream is idempotent by localUid, so a retried send's duplicate is harmless. true: required, a worker "
        "exits when the broker refuses; false: off.",
    )
    startup_grace_seconds: float = setting(
        "EMD_STARTUP_GRACE_SECONDS",
        30.0,
        "How long a worker keeps trying an unreachable broker or lifecycle database at start before it exits "
        "with an error.",
    )
    local_broker_port: int = setting(
        "EMD_BROKER_PORT", 0, "Port of the spawned local broker; 0 picks a free port."
    )
    kafka_min_insync_replicas: int = setting(
        "KAFKA_MIN_INSYNC_REPLICAS",
        1,
        "min.insync.replicas of topics the pipeline creates: with acks=all a write succeeds only once this many "
        "replicas have it (2 in production, with a replication factor of 3).",
    )
    kafka_security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_ssl_ca_file: str = setting(
        "KAFKA_SSL_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL)."
    )
    kafka_ssl_cert_file: str = setting(
        "KAFKA_SSL_CERT_FILE",
        "",
        "PEM client certificate, for brokers that authenticate clients by TLS (mTLS).",
    )
    kafka_ssl_key_file: str = setting("KAFKA_SSL_KEY_FILE", "", "PEM private key of KAFKA_SSL_CERT_FILE.")
    kafka_ssl_key_password: str = setting(
        "KAFKA_SSL_KEY_PASSWORD", "", "Password of KAFKA_SSL_KEY_FILE, when it is encrypted."
    )
    kafka_sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM", "", "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (SASL_PLAINTEXT, SASL_SSL)."
    )
    kafka_sasl_username: str = setting("KAFKA_SASL_USERNAME", "", "SASL user name.")
    kafka_sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", "SASL password.")

    # --- Observability ----------------------------------------------------------------------
    log_format: str = setting("EMD_LOG_FORMAT", "console", "console (people) or json (production).")
    log_level: str = setting("EMD_LOG_LEVEL", "info", "debug, info, warning, error.")
    metrics_port: int = setting(
        "EMD_METRICS_PORT", 0, "Port of a worker's /metrics and /healthz endpoint; 0 picks a free port."
    )
    metrics_host: str = setting(
        "EMD_METRICS_HOST", "127.0.0.1", "Interface /metrics binds to (0.0.0.0 in a pod)."
    )

    # --- Storage ----------------------------------------------------------------------------
    data_dir: Path = setting(
        "EMD_DATA_DIR",
        Path(".emd-data"),
        "Local state: claim-check documents (filesystem backend), lifecycle database, health files.",
    )
    document_store_url: str = setting(
        "EMD_DOCUMENT_STORE",
        "",
        "Claim-check store for document bytes: empty = <data_dir>/documents on the filesystem, "
        "file:///path, or s3://bucket/prefix (S3-compatible, see EMD_S3_*).",
    )
    s3_endpoint: str = setting(
        "EMD_S3_ENDPOINT", "", "S3-compatible endpoint URL (MinIO, Ceph, Yandex Object Storage)."
    )
    s3_region: str = setting("EMD_S3_REGION", "us-east-1", "S3 region used in request signing.")
    s3_access_key: str = setting("EMD_S3_ACCESS_KEY", "", "S3 access key id.")
    s3_secret_key: str = setting("EMD_S3_SECRET_KEY", "", "S3 secret key.")
    inline_document_limit: int = setting(
        "EMD_INLINE_DOCUMENT_LIMIT",
        INLINE_DOCUMENT_LIMIT,
        "Documents up to this many bytes travel inline in the created event; larger ones, and every document "
        "after created, by claim-check reference.",
    )
    max_document_bytes: int = setting(
        "EMD_MAX_DOCUMENT_BYTES", MAX_DOCUMENT_BYTES, "Largest СЭМД accepted; larger ones are rejected."
    )

    # --- Worker runtime ---------------------------------------------------------------------
    worker_concurrency: int = setting(
        "EMD_WORKER_CONCURRENCY", 16, "Records a worker handles at once (per process)."
    )
    signer_processes: int = setting(
        "EMD_SIGNER_PROCESSES",
        0,
        "Processes the signer checks and signs in; 0: one per usable CPU (affinity, capped by the cgroup quota). "
        "With one, signing runs in a thread of the signer itself.",
    )
    signer_recycle_documents: int = setting(
        "EMD_SIGNER_RECYCLE_DOCUMENTS",
        2000,
        "Documents a signing process handles before it is replaced: bounds Saxon's memory, which grows late-collected.",
    )
    shutdown_grace_seconds: float = setting(
        "EMD_SHUTDOWN_GRACE_SECONDS",
        25.0,
        "On SIGTERM, how long in-flight records (the callback service: requests) may finish before the process "
        "leaves (keep below the pod's terminationGracePeriodSeconds). The sender and the status worker wait on "
        "ИПС: give them at least EMD_SENDER_CONNECT_TIMEOUT + EMD_SENDER_READ_TIMEOUT, or a call is cut off.",
    )
    retry_in_place_max_seconds: float = setting(
        "EMD_RETRY_IN_PLACE_MAX_SECONDS",
        86400.0,
        "A stage without retry tiers (the signer, the status worker) retries a transient failure in place for at "
        "most this long, then dead-letters the record with its reason: one record never holds its partition's "
        "commits forever.",
    )
    health_max_idle_seconds: float = setting(
        "EMD_HEALTH_MAX_IDLE_SECONDS",
        120.0,
        "`--check` fails when the worker loop has not reported progress for this long.",
    )

    # --- Organisations, keys, РЭМД ----------------------------------------------------------
    organizations_file: Path = setting(
        "EMD_ORGANIZATIONS",
        Path("config/organizations.json"),
        "Per-organisation settings: certificates, МЧД, signing mode, РЭМД environment, rate limit.",
    )
    organizations_reload_seconds: float = setting(
        "EMD_ORGANIZATIONS_RELOAD_SECONDS",
        10.0,
        "How often a process looks for a changed organisations file or key (a clinic added, a key rotated: "
        "Secret volumes update in place) and reloads it, without a restart.",
    )

    # --- Callbacks and acknowledgement (status worker) -------------------------------------
    callback_host: str = setting("EMD_CALLBACK_HOST", "127.0.0.1", "Interface `emd callbacks` binds to.")
    callback_port: int = setting("EMD_CALLBACK_PORT", 8086, "Port of the МИС callback endpoint ИПС calls.")
    ips_certificates: str = setting(
        "EMD_IPS_CERTIFICATES",
        "",
        "Comma-separated PEM/DER files of the ИПС certificates a callback must be signed with (pinned).",
    )
    callback_addresses: str = setting(
        "EMD_CALLBACK_ADDRESSES",
        "",
        "Comma-separated addresses a callback's signed wsa:To may name besides every organisation's "
        "remd.callback_url (the ReplyTo we send); a callback addressed elsewhere is refused.",
    )
    callback_max_request_bytes: int = setting(
        "EMD_CALLBACK_MAX_REQUEST_BYTES",
        65536,
        "Largest request the callback endpoint reads (callbacks and file requests are a few KB): a larger "
        "one is answered 413 after at most this many bytes + 1, unparsed.",
    )
    callback_max_age_seconds: float = setting(
        "EMD_CALLBACK_MAX_AGE_SECONDS",
        300.0,
        "A callback whose signed wsu:Created is older than this (plus the clock skew) is refused as stale; "
        "each callback MessageID is remembered as long, so a replay within it is refused too.",
    )
    callback_clock_skew_seconds: float = setting(
        "EMD_CALLBACK_CLOCK_SKEW_SECONDS",
        300.0,
        "Clock difference with ИПС tolerated on a callback's wsu:Created and wsu:Expires.",
    )
    ack_timeout_seconds: float = setting(
        "EMD_ACK_TIMEOUT_SECONDS",
        24 * 3600.0,
        "No registerDocumentResult this long after acceptance: poll РЭМД, then dead-letter NO_ACKNOWLEDGMENT.",
    )
    ack_scan_interval_seconds: float = setting(
        "EMD_ACK_SCAN_INTERVAL_SECONDS", 60.0, "How often the status worker looks for overdue documents."
    )
    poll_interval_seconds: float = setting(
        "EMD_POLL_INTERVAL_SECONDS",
        300.0,
        "Routes without callbacks (N3.Health): how often an accepted document is looked up in the registry.",
    )

    # --- Sender (signed → sent) ----------------------------------------------------------------
    sender_retry_base_seconds: float = setting(
        "EMD_SENDER_RETRY_BASE_SECONDS",
        60.0,
        "Delay before the first retry of a transient РЭМД failure; doubles each time.",
    )
    sender_retry_max_seconds: float = setting(
        "EMD_SENDER_RETRY_MAX_SECONDS", 6 * 3600.0, "Longest delay between two attempts of one document."
    )
    sender_max_attempts: int = setting(
        "EMD_SENDER_MAX_ATTEMPTS", 12, "Attempts per document (first included) before the dead letter."
    )
    sender_connect_timeout: float = setting("EMD_SENDER_CONNECT_TIMEOUT", 10.0, "Seconds to connect to ИПС.")
    sender_read_timeout: float = setting("EMD_SENDER_READ_TIMEOUT", 60.0, "Seconds to wait for ИПС's answer.")

    sender_rate_limit_defer_seconds: float = setting(
        "EMD_SENDER_RATE_LIMIT_DEFER_SECONDS",
        60.0,
        "A RATE_LIMIT answer holds back the organisation's requests, and retries that document, after this long "
        "(ИПС asks for a minute or more).",
    )
    sender_breaker_failures: int = setting(
        "EMD_SENDER_BREAKER_FAILURES", 5, "Consecutive transport failures that open an endpoint's circuit."
    )
    sender_breaker_cool_down: float = setting(
        "EMD_SENDER_BREAKER_COOL_DOWN", 30.0, "Seconds an open circuit waits before probing the endpoint."
    )
    sender_endpoint_concurrency: int = setting(
        "EMD_SENDER_ENDPOINT_CONCURRENCY", 8, "Requests in flight at once per endpoint and organisation."
    )
    sender_hold_per_endpoint: int = setting(
        "EMD_SENDER_HOLD_PER_ENDPOINT",
        4,
        "Records a worker holds in memory while an endpoint's circuit is open; more are parked on the first "
        "retry tier (without using an attempt), so other organisations' records keep flowing.",
    )
    lifecycle_store_url: str = setting(
        "EMD_LIFECYCLE_STORE",
        "",
        "Lifecycle database: empty = <data_dir>/lifecycle.sqlite3 (SQLite, WAL, one host); "
        "postgresql://user@host/db for replicas on several hosts (docs/state.md).",
    )
    lifecycle_retention_days: float = setting(
        "EMD_LIFECYCLE_RETENTION_DAYS",
        180.0,
        "`emd lifecycle prune` deletes documents decided (registered or failed) longer ago than this, with their "
        "attempts; documents on their way are kept whatever their age.",
    )
    dead_letter_watch_seconds: float = setting(
        "EMD_DEAD_LETTER_WATCH_SECONDS",
        300.0,
        "How often the status worker's lease holder reads new dead letters and asks the lifecycle store which are "
        "handled (emd_dead_letters_unhandled, emd_dead_letters_unhandled_oldest_seconds).",
    )
    scanner_lease_seconds: float = setting(
        "EMD_SCANNER_LEASE_SECONDS",
        60.0,
        "The status worker's scanners (deadlines, N3 polls, unhandled dead letters) run on the one replica holding "
        "this lease in the lifecycle store; renewed every third of it, taken over this long after its holder died.",
    )
    unpromoted_clinics: str = setting(
        "EMD_UNPROMOTED_CLINICS",
        "test-stand",
        "Documents of a clinic not promoted to production (`emd clinic`): test-stand = sent to its remd.test_endpoint "
        "(held when it has none), hold = dead-lettered CLINIC_NOT_PROMOTED for replay after promotion (docs/support.md).",
    )
    console_users_file: Path = setting(
        "EMD_CONSOLE_USERS",
        Path("config/console-users.json"),
        "Support console users allowed to replay and promote: name → scrypt hash (`emd console add-user`).",
    )
    console_host: str = setting("EMD_CONSOLE_HOST", "127.0.0.1", "Interface `emd console` binds to.")
    console_port: int = setting("EMD_CONSOLE_PORT", 8087, "Port of the support console (`emd console`).")
    console_trusted_proxies: str = setting(
        "EMD_CONSOLE_TRUSTED_PROXIES",
        "",
        "Comma-separated addresses or networks of the TLS front (ingress) before the console: from them "
        "X-Forwarded-For names the client (for the login limit) and X-Forwarded-Proto the scheme.",
    )
    console_secure_cookies: str = setting(
        "EMD_CONSOLE_SECURE_COOKIES",
        "auto",
        "Session cookie marked Secure: auto = when the request came over TLS (directly, or X-Forwarded-Proto "
        "https from the TLS front), true = always (the console is only reached through TLS), false = never.",
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_env_name(f))
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f, raw)
        values.update(overrides)
        return cls(**values)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value, documentation) for every setting, secrets masked."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "" if value is None else str(value)
            if any(m in _env_name(f) for m in _SECRET_MARKERS) and shown:
                shown = "***"
            shown = _URL_PASSWORD.sub(r"\1***@", shown)  # postgresql://user:password@host → user:***@
            rows.append((_env_name(f), shown, f.metadata["doc"]))
        return rows


_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _convert(f: dataclasses.Field, raw: str) -> Any:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "Path": Path, "str": str, "bool": bool}.get(
            str(f.type).removesuffix(" | None"), str
        )
    )
    try:
        if kind is bool:  # a typo must not silently mean "off"
            if raw.strip().lower() not in _BOOLEANS:
                raise ConfigurationError(f"{_env_name(f)}={raw!r} is neither true nor false")
            return _BOOLEANS[raw.strip().lower()]
        return kind(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{_env_name(f)}={raw!r} is not a valid {kind.__name__}") from exc


def settings_table_markdown() -> str:
    """The configuration table of the README, generated from the code so they cannot drift."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        lines.append(f"| `{_env_name(f)}` | `{'' if default is None else default}` | {f.metadata['doc']} |")
    return "\n".join(lines)
