"""The identifiers every layer compares, each in one normal form.

A SOAP MessageID is written by many hands: our sender, ИПС, regional gateways and support journals spell
the same UUID with or without ``urn:uuid:`` (or ``uuid:``), in upper case, without hyphens, in braces, or
in the mail-style ``<…>`` form a Message-ID header takes (``docs/protocol.md#messageid-spellings``). Everything
that stores or compares one — the lifecycle store, the callback service, the status worker, the emulator, dead
letters, the support desk — goes through :func:`normalize_message_id`, so the spelling a gateway or a support
engineer chose never decides whether two ids match.
"""

from __future__ import annotations

import uuid

__all__ = ["new_message_id", "normalize_message_id", "same_message_id"]


def new_message_id() -> str:
    """A fresh wsa:MessageID: a plain random UUID, as the reference signer writes it [C]
    (docs/protocol.md#soap-header)."""
    return str(uuid.uuid4())


def normalize_message_id(value: str | None) -> str:
    """The one form MessageIDs are compared in: no ``<…>`` around it, no ``urn:uuid:``/``uuid:`` prefix, lower case.

    A UUID written without hyphens (seen in gateway journals, docs/protocol.md#messageid-spellings) or in braces
    gets its canonical form back, so every spelling of one UUID compares equal. Non-UUID ids are kept, stripped
    and lower-cased.
    """
    text = (value or "").strip()
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":  # the mail-style Message-ID form
        text = text[1:-1].strip()
    low = text.lower()
    for prefix in ("urn:uuid:", "uuid:"):
        if low.startswith(prefix):
            low = low[len(prefix) :].strip()
            break
    try:
        return str(uuid.UUID(low))
    except ValueError:
        return low


def same_message_id(a: str | None, b: str | None) -> bool:
    """Whether two MessageIDs name the same message, whatever their spellings (an empty one matches nothing)."""
    left = normalize_message_id(a)
    return bool(left) and left == normalize_message_id(b)
