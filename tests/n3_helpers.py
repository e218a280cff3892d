"""What the N3 tests share: a clinic on the N3 route with development keys, and its documents signed for real.

``N3Clinic.make(directory, sample)`` writes the development configuration ``emd request --dev`` writes (the
sample's organisation and signers, on the N3 route: ``lab.dev.config.request_config``) and loads it;
``clinic.signed(document)`` runs the signer's own ``sign_document`` over a document, and ``clinic.request(...)``
makes the sender's ``SubmitRequest`` of it, codes resolved as the sender resolves them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.dev.config import request_config
from lab.dev.local_pipeline import as_new_document
from lab.dev.samples import REPOSITORY_SAMPLES
from producer.client import build_created_event
from services.pipeline.n3_route import dictionary_of, n3_codes
from services.pipeline.organizations import Organization, OrganizationsConfig, load_organizations
from services.pipeline.signing import sign_document
from services.pipeline.submission import registration_from_event
from services.remd.transport import SubmitRequest

CONSULT = "ConsultRedaction4.xml"  #: kind 119 → dictionary-195 code 198


def sample(name: str = CONSULT, *, fresh: bool = True) -> bytes:
    """A repository sample; ``fresh``: with a new localUid and a creation time of now, as a clinic sends it."""
    data = (REPOSITORY_SAMPLES / name).read_bytes()
    return as_new_document(data) if fresh else data


def created_data(document: bytes) -> dict[str, Any]:
    """The created event's data of a document, exactly as the МИС library makes it."""
    return dict(build_created_event(document, system_id="dental-mis-01", store=None)["data"])


@dataclass
class N3Clinic:
    path: Path
    config: OrganizationsConfig
    org: Organization

    @classmethod
    def make(
        cls,
        directory: Path,
        document: bytes,
        *,
        route: str = "n3",
        change: Callable[[dict], None] | None = None,
    ) -> N3Clinic:
        """``change``: edits the organisations file (a dict) before it is loaded."""
        path = request_config(directory, document, route)
        if change is not None:
            raw = json.loads(path.read_text(encoding="utf-8"))
            change(raw)
            path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
        config = load_organizations(path)
        [org] = config.organizations.values()
        return cls(path=path, config=config, org=org)

    @property
    def token(self) -> str:
        assert self.org.remd is not None and self.org.remd.n3 is not None
        return self.org.remd.n3.token

    @property
    def lpu(self) -> str:
        assert self.org.remd is not None and self.org.remd.n3 is not None
        return self.org.remd.n3.lpu_id

    def signed(self, document: bytes, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The signed event's data: the created data with the signer's signatures over ``document``."""
        data = created_data(document)
        return {**data, "signatures": sign_document(data, document, self.config, now=now)}

    def request(
        self,
        signed: dict[str, Any],
        document: bytes,
        *,
        endpoint: str,
        message_id: str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        add_patient: bool = True,
        token: str | None = None,
    ) -> SubmitRequest:
        """The sender's SubmitRequest for this document, to ``endpoint`` (an …/EMKService.svc address)."""
        assert self.org.remd is not None and self.org.remd.n3 is not None
        return SubmitRequest(
            registration=registration_from_event(signed),
            message_id=message_id,
            endpoint=endpoint,
            document=document,
            auth_token=token or self.token,
            lpu_id=self.lpu,
            n3_codes=n3_codes(signed, self.org, dictionary_of(self.config)),
            add_patient=add_patient,
            pix_endpoint=self.org.remd.n3.pix_for(endpoint),
        )
