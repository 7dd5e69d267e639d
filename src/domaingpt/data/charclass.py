"""One character classification, shared by the corpus statistics and the saliency analysis.

Every character (Unicode code point) falls in exactly one of :data:`CLASSES`:

``vowel``
    ``aeiouAEIOU`` (ASCII only; ``y`` is a consonant).
``consonant``
    Every other ASCII letter.
``digit``
    ``0``-``9`` (ASCII only; ``²`` or Arabic-Indic digits are ``other``).
``whitespace``
    Space, tab and every other whitespace character that is not a newline, ASCII or not
    (form feed, vertical tab, U+00A0 NO-BREAK SPACE, U+3000 IDEOGRAPHIC SPACE, U+2028 ...).
``newline``
    ``"\\n"`` and ``"\\r"`` only.
``punctuation``
    ASCII punctuation that is not a math symbol: ``! " # $ % & ' ( ) , . : ; ? @ [ ] _ `
    { }``. Non-ASCII punctuation (``’``, ``—``, ``«``) is ``other``.
``math_symbol``
    The ASCII operators ``+ - * / = < > ^ | ~ \\`` and every character of Unicode category
    ``Sm`` (``±``, ``×``, ``∑``, ``→`` ...). ``-`` and ``/`` are math symbols even when
    used as hyphen or slash in prose, and ``\\`` is one because it starts every LaTeX
    command.
``other``
    Everything else: non-ASCII letters (``é``, ``Æ``, ``ω``, ``万``, ``ش``), non-ASCII
    punctuation, currency signs other than ``$``, marks, control characters, ...
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

CLASSES: tuple[str, ...] = (
    "vowel",
    "consonant",
    "digit",
    "whitespace",
    "newline",
    "punctuation",
    "math_symbol",
    "other",
)

VOWELS = frozenset("aeiouAEIOU")
CONSONANTS = frozenset(string.ascii_letters) - VOWELS
DIGITS = frozenset(string.digits)
NEWLINES = frozenset("\n\r")
ASCII_MATH = frozenset("+-*/=<>^|~\\")
ASCII_PUNCTUATION = frozenset(string.punctuation) - ASCII_MATH

_NAMED = {
    " ": "<space>",
    "\n": "<newline>",
    "\t": "<tab>",
    "\r": "<cr>",
}


def _check_char(ch: str) -> None:
    if not isinstance(ch, str) or len(ch) != 1:
        raise ValueError(f"expected a single character, got {ch!r}")


@lru_cache(maxsize=65536)
def char_class(ch: str) -> str:
    """The class of one character, one of :data:`CLASSES` (see the module docstring)."""
    _check_char(ch)
    if ch in VOWELS:
        return "vowel"
    if ch in CONSONANTS:
        return "consonant"
    if ch in DIGITS:
        return "digit"
    if ch in NEWLINES:
        return "newline"
    if ch.isspace():
        return "whitespace"
    if ch in ASCII_MATH or unicodedata.category(ch) == "Sm":
        return "math_symbol"
    if ch in ASCII_PUNCTUATION:
        return "punctuation"
    return "other"


def classes_of(chars: Sequence[str]) -> list[str]:
    """:func:`char_class` of each character; results are cached per character."""
    return [char_class(ch) for ch in chars]


def is_non_ascii(ch: str) -> bool:
    """True for any code point above U+007F."""
    _check_char(ch)
    return ord(ch) > 0x7F


@lru_cache(maxsize=65536)
def describe_token(text: str) -> str:
    """A printable label of a token's text: one character as :func:`describe_char`
    writes it (``e``, ``<space>``), a longer token quoted with escapes (``' the'``,
    ``'\\n\\n'``), an empty one (a piece of a character) ``''``."""
    return describe_char(text) if len(text) == 1 else repr(text)


def describe_char(ch: str) -> str:
    """A printable, unambiguous label for a character.

    ``" "`` -> ``<space>``, ``"\\n"`` -> ``<newline>``, ``"\\t"`` -> ``<tab>``, ``"\\r"``
    -> ``<cr>``; a visible character is itself (``e``, ``°``, ``万``); anything invisible
    or that cannot stand alone gets its code point: ``U+00A0 <no-break space>``,
    ``U+0007 <control>``, ``U+0301 ◌́`` (combining marks on a dotted circle).
    """
    _check_char(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    code = f"U+{ord(ch):04X}"
    category = unicodedata.category(ch)
    if category in ("Mn", "Mc", "Me"):
        return f"{code} \u25cc{ch}"
    if ch.isprintable() and not ch.isspace():
        return ch
    if category == "Cc":
        return f"{code} <control>"
    if category == "Co":
        return f"{code} <private use>"
    if category == "Cs":
        return f"{code} <surrogate>"
    name = unicodedata.name(ch, "")
    return f"{code} <{name.lower()}>" if name else f"{code} <unassigned>"
