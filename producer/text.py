"""Normal forms of text that every side compares: one function per form, used everywhere.

A СНИЛС reaches the pipeline written in several ways: ``123-456-789 01`` in a МЧД or a МИС's metadata, 11
bare digits in a certificate (OID 1.2.643.100.3) and in the CDA once ``producer.cda`` has read it. Whoever
compares two of them compares their :func:`digits`.
"""

from __future__ import annotations

__all__ = ["digits"]

_DIGITS = frozenset("0123456789")


def digits(value: object) -> str:
    """The ASCII digits of ``value``, in order, and nothing else: ``"123-456-789 01"`` → ``"12345678901"``.

    ``None`` gives ``""``, as does a value without a digit; anything else is read as ``str(value)``. Only ASCII
    digits count: a digit of another script is not a digit of a Russian registry number.
    """
    if value is None:
        return ""
    return "".join(ch for ch in str(value) if ch in _DIGITS)
