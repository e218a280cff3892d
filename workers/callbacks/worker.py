"""The callback service (``emd callbacks``): the HTTP endpoint ИПС calls, ``registerDocumentResult`` and
``getDocumentFile``.

The protocol is ``services.pipeline.callbacks.CallbackService``; ``services.pipeline.callback_endpoint`` serves
it over HTTP and publishes callbacks to ``emd.remd.callbacks``. Replies are signed per information system:
every organisation's ``remd`` system key, chosen per request (``services.pipeline.callbacks.ReplyKeys``).
"""

from __future__ import annotations

from services import lifecycle
from services.config import Settings
from services.documents.store import store_from_settings
from services.messaging.app import App
from services.pipeline.callback_endpoint import (
    CallbackEndpoint,
    load_ips_certificates,
    own_addresses,
    reply_credentials,
)
from services.pipeline.organizations import load_organizations, watch_organizations

NAME = "callbacks"


def build(settings: Settings) -> App:
    """``emd callbacks``: keys, pinned certificates and the lifecycle store loaded (and checked) before serving."""
    # the ИС keys alone (never a doctor's or an organisation's); reloaded when their Secret changes
    config = load_organizations(settings.organizations_file, role="callbacks")
    reply_keys = reply_credentials(config)
    trusted = load_ips_certificates(settings.ips_certificates)
    store = lifecycle.open_store(
        settings.data_dir, url=settings.lifecycle_store_url, wait=settings.startup_grace_seconds
    )
    endpoint = CallbackEndpoint(
        settings=settings,
        store=store,
        documents=store_from_settings(settings),
        reply_keys=reply_keys,
        trusted_certificates=trusted,
        own_addresses=own_addresses(config, settings),
    )
    config.on_reload(endpoint.reconfigure)
    watching = watch_organizations(config, interval=settings.organizations_reload_seconds)
    return App(NAME, settings, [endpoint], on_stop=[store.close, watching.set])
