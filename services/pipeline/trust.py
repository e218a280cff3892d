"""Who may publish for whom: the signer's check of a created record's writer, before anything else is done.

The trust model (docs/security.md): each МИС has its own Kafka principal and writes only its own topic,
``emd.document.created.<misId>``; the broker enforces that, so the topic a record arrived on names its writer
in a form the МИС cannot forge. The organisations file grants each МИС the organisations and systemIds it may
publish for (``mis``). :func:`check_publisher` reads the misId from the record's topic and refuses any event
whose ``organizationOid`` or ``systemId`` is outside that grant, with ``ORGANIZATION_NOT_ALLOWED`` (category
``security``: support and the security officer look at it). The signer calls it first, **before anything is
fetched from the claim-check store or signed**; the document's custodian is then checked against the event's
``organizationOid`` (``EVENT_DOCUMENT_MISMATCH``), so the grant covers the document itself, not only its
envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from producer import topology
from producer.errors import PermanentError
from services.pipeline.organizations import MisGrant, OrganizationsConfig

__all__ = ["check_publisher", "NOT_ALLOWED"]

NOT_ALLOWED = "ORGANIZATION_NOT_ALLOWED"


def check_publisher(config: OrganizationsConfig, topic: str, data: Mapping[str, Any]) -> MisGrant:
    """The grant of the МИС that wrote ``data`` (a created event's payload) to ``topic``, or
    ``PermanentError(ORGANIZATION_NOT_ALLOWED)`` naming what is outside it (``field``: ``misId``,
    ``organizationOid`` or ``systemId``)."""
    mis_id = topology.mis_of_created_topic(topic)
    grant = config.mis.get(mis_id) if mis_id is not None else None
    if grant is None:
        raise PermanentError(
            f"the record came from topic {topic}, which is not the created topic of a МИС of the "
            "organisations file",
            reason=NOT_ALLOWED,
            field="misId",
        )
    organization = data.get("organizationOid")
    if organization not in grant.organizations:
        raise PermanentError(
            f"МИС {grant.id} may not publish for organisation {organization}",
            reason=NOT_ALLOWED,
            field="organizationOid",
        )
    system_id = data.get("systemId")
    if system_id not in grant.system_ids:
        raise PermanentError(
            f"МИС {grant.id} may not publish as systemId {system_id!r}",
            reason=NOT_ALLOWED,
            field="systemId",
        )
    return grant
