"""``producer.text.digits``: the one normal form a СНИЛС is compared in."""

from __future__ import annotations

import pytest

from producer.text import digits


@pytest.mark.parametrize(
    "value, expected",
    [
        ("123-456-789 01", "12345678901"),
        ("12345678901", "12345678901"),
        (" 123 456 789 01\n", "12345678901"),
        ("СНИЛС 123-456-789-01", "12345678901"),
        (12345678901, "12345678901"),
    ],
)
def test_every_spelling_of_a_snils_gives_its_eleven_digits(value, expected):
    """Separators, spaces, words around it and an integer all give the same digits."""
    assert digits(value) == expected


@pytest.mark.parametrize("value", [None, "", "нет", "--"])
def test_a_value_without_digits_gives_the_empty_string(value):
    """None, the empty string and text without a digit all give ""."""
    assert digits(value) == ""


def test_only_ascii_digits_count():
    """Digits of other scripts (Arabic-Indic, fullwidth) are dropped like any other character."""
    assert digits("١٢٣ １２３ 123") == "123"
