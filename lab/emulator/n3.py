"""The emulator's N3.Health face: EmkService ``AddCase`` and the document storage, in front of the same registry.

``POST /n3/emk``: an ``AddCase`` (``services.remd.n3``) whose token (the ``guid`` parameter) is one of ``tokens``
and whose ``idLpu`` is that token's. Checked at once, as the platform would before forwarding to РЭМД (our
reading, [G]): the attached СЭМД with every signature (``checks.check_request`` and ``check_document``, the
request built from the document itself and the case's signers) and the localUid rules — known with the same
bytes → taken again, with other bytes → ``NOT_UNIQUE_PROVIDED_ID`` in plain words. A problem is a
``RequestFault`` (s:Client) naming the РЭМД code; otherwise ``AddCaseResponse``, and ``delay`` seconds later the
document is registered in the shared :class:`~lab.emulator.registry.Registry` under the N3 platform's
information system (``N3_SYSTEM``). A ``reject`` rule refuses it with its code instead.

``POST /n3/docstorage/``: ``Authorization: N3 <token>``, a JSON search (``oidMo``, ``remdCode``, dates) → every
document of that organisation and kind N3 holds, with ``emdrId`` once registered. No callback is ever sent.

Each ``AddCase`` is in the request log as operation ``n3:AddCase`` with the ``X-Request-ID`` it carried as its
MessageID: the id N3 support would be given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from lab.emulator import checks
from lab.emulator.faults import FaultInjector
from lab.emulator.registry import Registry
from lab.emulator.variants import LaterRequests
from producer.cda import extract
from producer.errors import PermanentError
from producer.xmlsafe import parse_xml
from services.remd import n3, soap
from services.remd import n3_names as names

__all__ = ["ADD_CASE", "N3Face", "N3_SYSTEM"]

ADD_CASE = "n3:AddCase"
#: the information system N3 registers its clinics' documents under (one for the platform)
N3_SYSTEM = "n3-platform"
_XML = "text/xml; charset=utf-8"


class N3Face:
    """``handle(path, body, headers) -> (HTTP status, body, content type)`` for the ``/n3/`` paths."""

    def __init__(
        self,
        *,
        registry: Registry,
        faults: FaultInjector,
        tokens: Mapping[str, str],
        later: LaterRequests,
        delay: float = 1.0,
    ) -> None:
        self.registry, self.faults, self.later, self.delay = registry, faults, later, delay
        self.tokens = dict(tokens)  # token → ЛПУ id
        self._held: dict[str, soap.RegistryItem] = {}  # localUid → taken, not yet registered
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the cases taken and not yet registered (with the registry's own reset)."""
        with self._lock:
            self._held.clear()

    def handle(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        if "docstorage" in path:
            return self._search(body, headers)
        return self._add_case(body, headers)

    # --- EmkService ----------------------------------------------------------------------------

    def _add_case(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        arrival = dt.datetime.now(dt.UTC)
        request_id = headers.get(names.REQUEST_ID_HEADER)
        entry = self.registry.log_request(ADD_CASE, message_id=request_id)
        try:
            case = n3.parse_add_case(body)
        except PermanentError as exc:
            return self._refuse(entry, "VALIDATION_ERROR", f"Запрос не соответствует схеме: {exc.message}")
        self.registry.update(entry, local_uid=case.local_uid, client_entity_id=N3_SYSTEM)
        if self.tokens.get(case.token) != case.lpu_id:
            self.registry.update(entry, outcome="fault", sync_codes=["UNAUTHORIZED"])
            return 401, "Неверный токен авторизации N3 для этой МО".encode(), "text/plain; charset=utf-8"
        decision = self.faults.decide(operation=ADD_CASE, message_id=request_id, local_uid=case.local_uid)
        if decision.sync_kind == "http_error" and decision.sync is not None:
            self.registry.update(entry, outcome="injected:http_error")
            return decision.sync.status, b"N3 temporarily unavailable (injected)", "text/plain; charset=utf-8"
        reject = decision.callbacks.get("reject")
        if reject is not None:
            return self._refuse(entry, reject.code or "VALIDATION_ERROR", "Отклонено правилом эмулятора")
        try:
            meta = extract(parse_xml(case.document))
        except PermanentError as exc:
            return self._refuse(entry, "INVALID_CONTENT", f"Вложение не является СЭМД: {exc.message}")
        reg = _registration(case, meta)
        errors = checks.check_request(reg, now=arrival) or checks.check_document(
            reg, case.document, arrival=arrival
        )
        if errors:
            return self._refuse(entry, errors[0].code, "; ".join(e.message for e in errors))
        digest = hashlib.sha256(case.document).hexdigest()
        existing = self.registry.lookup(N3_SYSTEM, case.local_uid)
        if existing is not None and existing.digest != digest:
            return self._refuse(
                entry,
                "NOT_UNIQUE_PROVIDED_ID",
                f"Документ с идентификатором [{case.local_uid}] уже зарегистрирован "
                f"[{existing.emdr_id}] с другим содержимым: изменённый СЭМД регистрируется под "
                f"новым localUid",
            )
        self.registry.update(entry, organization=reg.organization, outcome="accepted")
        if existing is None:
            with self._lock:
                self._held.setdefault(
                    case.local_uid,
                    soap.RegistryItem(
                        local_uid=case.local_uid,
                        kind=reg.kind,
                        organization=reg.organization,
                        creation_date_time=reg.creation_date_time,
                    ),
                )
            self.later.schedule(self.delay, lambda: self._register(entry, reg, digest))
        return 200, n3.build_add_case_response(), _XML

    def _register(self, entry: Any, reg: soap.Registration, digest: str) -> None:
        record, existing = self.registry.register(
            local_uid=reg.local_uid,
            organization=reg.organization,
            kind=reg.kind,
            message_id=entry.message_id or "",
            client_entity_id=N3_SYSTEM,
            patient_snils=reg.patient.snils,
            digest=digest,
        )
        with self._lock:
            self._held.pop(reg.local_uid, None)
        done = record or existing
        self.registry.update(
            entry,
            outcome="registered",
            emdr_id=done.emdr_id if done else None,
            finished_at=dt.datetime.now(dt.UTC),
        )

    def _refuse(self, entry: Any, code: str, message: str) -> tuple[int, bytes, str]:
        self.registry.update(
            entry, outcome="rejected", sync_codes=[code], finished_at=dt.datetime.now(dt.UTC)
        )
        return 500, n3.build_request_fault(code=code, message=message), _XML

    # --- document storage ----------------------------------------------------------------------

    def _search(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        scheme, _, token = (headers.get(names.AUTH_HEADER) or "").partition(" ")
        if scheme != names.AUTH_SCHEME or token.strip() not in self.tokens:
            return 401, b'{"error": "unauthorized"}', "application/json; charset=utf-8"
        try:
            query = json.loads(body or b"{}")
            organization = query[names.DOC_OID_MO]
            kinds = set(query.get(names.DOC_REMD_CODE) or ())
        except (ValueError, KeyError, TypeError):
            return 400, b'{"error": "oidMo and remdCode are required"}', "application/json; charset=utf-8"
        items = [
            soap.RegistryItem(
                emdr_id=r.emdr_id,
                local_uid=r.local_uid,
                kind=r.kind,
                organization=r.organization,
                registration_date_time=r.registration_date_time.isoformat(),
            )
            for r in self.registry.search(organization=organization, client_entity_id=N3_SYSTEM)
            if not kinds or r.kind in kinds
        ]
        with self._lock:
            items += [
                i
                for i in self._held.values()
                if i.organization == organization and (not kinds or i.kind in kinds)
            ]
        self.registry.log_request("n3:docstorage", outcome="answered")
        return (
            200,
            json.dumps(n3.search_answer(items), ensure_ascii=False).encode(),
            "application/json; charset=utf-8",
        )


def _registration(case: n3.N3Case, meta: Any) -> soap.Registration:
    """What N3 would send РЭМД for this case: the document's own header, the case's signatures."""
    p = meta.patient
    return soap.Registration(
        kind=meta.kind_code or case.kind or "",
        system=N3_SYSTEM,
        organization=meta.organization_oid or "",
        local_uid=case.local_uid,
        creation_date_time=case.creation_date
        or (meta.creation_time.isoformat() if meta.creation_time else ""),
        patient=soap.Patient(
            snils=p.snils,
            local_id=p.local_id,
            family=p.family,
            given=p.given,
            patronymic=p.patronymic,
            gender=p.gender,
            birth_date=p.birth_date.isoformat() if p.birth_date else None,
        )
        if p
        else soap.Patient(),
        personal_signatures=case.personal_signatures,
        org_signature=soap.OrgSignature(signature=case.org_signature) if case.org_signature else None,
        department=meta.department_oid,
        document_number=meta.document_number,
    )
