"""Matching rules against text: every safety rule is a lower-case regular expression over
normalised text, so look-alike characters, zero-width characters and case do not hide a match."""

from __future__ import annotations

import re
import unicodedata


def rx(pattern: str) -> re.Pattern[str]:
    """Compile a rule's pattern; text is normalised to lower case first, so patterns are lower case."""
    return re.compile(pattern)


def normalise(text: str) -> str:
    """Lower-case ``text``, unify look-alike characters and collapse whitespace, for matching.

    NFKC folds full-width and other compatibility characters, zero-width characters are dropped
    (they are a cheap way to split a keyword), and curly quotes become straight ones.
    """
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\u200b-\u200f\u2060\ufeff]", "", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().casefold()
