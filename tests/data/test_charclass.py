from __future__ import annotations

import pytest

from domaingpt.data.charclass import CLASSES, char_class, classes_of, describe_char, is_non_ascii

# Characters of each class, the classes in the order of CLASSES.
EXPECTED = {
    "vowel": "aeiouAEIOU",
    "consonant": "bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ",
    "digit": "0123456789",
    "whitespace": " \t\x0b\x0c\u00a0\u3000\u2028",
    "newline": "\n\r",
    "punctuation": ".,;:!?'\"()[]{}_#$%&@`",
    "math_symbol": "+-*/=<>^|~\\±×÷∑→≤",
    "other": "éÆωß万ش’—«€£¥°©ℒ²\x00\x07\u200b\U0001f600",
}


def test_classes_tuple() -> None:
    assert tuple(EXPECTED) == CLASSES


@pytest.mark.parametrize("cls", CLASSES)
def test_char_class(cls: str) -> None:
    for ch in EXPECTED[cls]:
        assert char_class(ch) == cls, repr(ch)


def test_every_ascii_char_has_one_class() -> None:
    for i in range(128):
        assert char_class(chr(i)) in CLASSES
    punct = [chr(i) for i in range(128) if char_class(chr(i)) == "punctuation"]
    math = [chr(i) for i in range(128) if char_class(chr(i)) == "math_symbol"]
    assert sorted(math) == sorted("+-*/=<>^|~\\")
    assert len(punct) + len(math) == 32  # string.punctuation, split in two


def test_classes_of() -> None:
    assert classes_of("a b\n1+.é") == [
        "vowel",
        "whitespace",
        "consonant",
        "newline",
        "digit",
        "math_symbol",
        "punctuation",
        "other",
    ]
    assert classes_of([]) == []
    assert classes_of(["x", "y"]) == ["consonant", "consonant"]


def test_char_class_rejects_strings() -> None:
    with pytest.raises(ValueError):
        char_class("ab")
    with pytest.raises(ValueError):
        char_class("")


def test_is_non_ascii() -> None:
    assert not is_non_ascii("a")
    assert not is_non_ascii("\x7f")
    assert is_non_ascii("\x80")
    assert is_non_ascii("万")


def test_describe_char() -> None:
    assert describe_char(" ") == "<space>"
    assert describe_char("\n") == "<newline>"
    assert describe_char("\t") == "<tab>"
    assert describe_char("\r") == "<cr>"
    assert describe_char("e") == "e"
    assert describe_char("°") == "°"
    assert describe_char("万") == "万"
    assert describe_char("\x00") == "U+0000 <control>"
    assert describe_char("\x7f") == "U+007F <control>"
    assert describe_char("\u00a0") == "U+00A0 <no-break space>"
    assert describe_char("\u200b") == "U+200B <zero width space>"
    assert describe_char("\u0301") == "U+0301 \u25cc\u0301"
    assert describe_char("\ue000") == "U+E000 <private use>"
    assert describe_char("\U000e0000") == "U+E0000 <unassigned>"
    for i in range(0x3000):
        label = describe_char(chr(i))
        assert label and label.isprintable()
