"""Find doses in free text and normalise their units to mg (or units / mL).

``parse_doses`` reads sentences such as "paracetamol 500 mg every 6 hours, max 4 g in 24 hours"
and returns one ``DoseMention`` per amount: its strength in a canonical unit, the number of
tablets per dose, how many doses a day, and the resulting daily total. It only parses; whether a
dose is too high is decided elsewhere against the drug table.

The parser is a few compiled regular expressions plus a short scan after each amount for its
frequency. It deliberately recognises only an amount *with a unit*, so numbers such as "age 65",
"140/90" or "24 hours" are never read as doses. Weight-based amounts ("15 mg/kg") and
concentrations ("5 mg/mL", "120 g/L") are skipped because they are not a dose by themselves.

Where the text gives a range, the upper bound is kept ("500 mg to 1 g" -> 1 g, "every 4 to 6
hours" -> 6 a day), because a safety check must consider the largest dose the text allows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

log = logging.getLogger(__name__)

CanonicalUnit = Literal["mg", "units", "mL"]

# Unit spelling (lower case) -> (factor to the canonical unit, canonical unit). Mass goes to mg so
# that "1 g" and "1000 mg" compare equal; units and mL are not masses and stay as they are.
_UNIT_FACTORS: dict[str, tuple[float, CanonicalUnit]] = {
    "mg": (1.0, "mg"),
    "milligram": (1.0, "mg"),
    "milligrams": (1.0, "mg"),
    "g": (1000.0, "mg"),
    "gm": (1000.0, "mg"),
    "gram": (1000.0, "mg"),
    "grams": (1000.0, "mg"),
    "mcg": (0.001, "mg"),
    "ug": (0.001, "mg"),
    "µg": (0.001, "mg"),  # micro sign U+00B5
    "μg": (0.001, "mg"),  # Greek mu U+03BC: both occur in pasted text
    "microgram": (0.001, "mg"),
    "micrograms": (0.001, "mg"),
    "unit": (1.0, "units"),
    "units": (1.0, "units"),
    "iu": (1.0, "units"),
    "ml": (1.0, "mL"),
    "millilitre": (1.0, "mL"),
    "millilitres": (1.0, "mL"),
    "milliliter": (1.0, "mL"),
    "milliliters": (1.0, "mL"),
}

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
_TIMES_WORDS = {"once": 1, "twice": 2, "thrice": 3}

# --- building blocks ------------------------------------------------------------------------------

# "1,000" (thousands separators), "1.5", ".5", "81". A comma is a separator only before exactly
# three digits, so a European "1,5" is not misread as 15.
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_WORD_NUM = "|".join(_NUMBER_WORDS)
# A number as a frequency or interval: digits or a word ("every four hours", "three times a day").
_N = rf"(?:{_NUM}|{_WORD_NUM})"
# How many tablets: a small number, a word, "a"/"an", or "half (a)".
_COUNT = rf"(?:\d{{1,2}}|{_WORD_NUM}|an?|half(?:\s+an?)?)"
# Longest spellings first so "mg" is not read as "m" + "g", nor "grams" as "g".
_UNIT = "|".join(sorted((re.escape(u) for u in _UNIT_FACTORS), key=len, reverse=True))
_FORM = (
    r"(?:tablets?|tabs?|capsules?|caps?|pills?|sachets?|suppositor(?:y|ies)|puffs?|sprays?|patch(?:es)?|doses?"
    r"|injections?)"
)
_RANGE = r"\s*(?:-|–|to|or)\s*"
# A unit followed by "/kg", "per kg", "/mL", "/L", "/min", "/hour" is a weight-based dose, a
# concentration or a rate, never a dose by itself. "/day" and "/24h" are allowed (a daily amount).
_NOT_A_RATE = r"(?!\s*(?:/|per\s)\s*(?:kg|kilo|m2|m²|ml|mL|l\b|dl|litre|liter|min|hour|hr|h\b))"

_DOSE = re.compile(
    rf"""
    (?<![\w.,/])                                    # start on a fresh token: not inside "B12" or "1.5"
    (?:                                             # optional tablet count: "two", "2 x", "1-2 tablets of"
        (?P<count>{_COUNT})(?:{_RANGE}(?P<count_hi>{_COUNT}))?
        (?P<link>\s*[x×]\s*|\s+{_FORM}\s+(?:of|x|×)\s+|\s+{_FORM}\s*\(\s*|\s+)   # "2 tablets (500 mg each)"
    )?
    (?P<amount>{_NUM}|{_WORD_NUM})                 # the strength
    (?:{_RANGE}(?P<amount_hi>{_NUM}))?              # "500-1000 mg": same unit for both
    \s*(?P<unit>{_UNIT})(?![a-zµμ])
    (?:{_RANGE}(?P<amount2>{_NUM})\s*(?P<unit2>{_UNIT})(?![a-zµμ]))?   # "500 mg to 1 g"
    {_NOT_A_RATE}
    (?:\s+(?:[a-z][\w-]*\s+)?(?P<form>{_FORM})(?!\w))?   # "tablets", "paracetamol tablets"
    """,
    re.IGNORECASE | re.VERBOSE,
)

# --- frequencies ---------------------------------------------------------------------------------
# Each rule is tried, in order, at the position right after an amount (and any filler words).
# Order matters: "once daily" must win over "daily", "q.d.s." over "q.d.", "4-hourly" over "hourly".
# A rule yields (doses per day, kind):
#   "explicit" - a count of doses: "twice a day", "q6h", "TDS", "at night"
#   "daily"    - "daily" / "a day": once a day, unless a "max" before the amount makes it a limit
#   "per_24h"  - "per day", "in 24 hours", "/day": the amount is a daily total, not one dose
FrequencyKind = Literal["explicit", "daily", "per_24h"]
_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[float, FrequencyKind]]]


def _num(token: str) -> float:
    """A number written with digits, thousands separators or as a word ("three")."""
    token = token.strip().lower()
    if token in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[token])
    if token in ("a", "an"):
        return 1.0
    if token.startswith("half"):
        return 0.5
    return float(token.replace(",", ""))


def _upper(match: re.Match[str], low: str, high: str) -> float:
    """The larger of a possibly ranged number pair ("3-4" -> 4)."""
    values = [_num(match[low])] + ([_num(match[high])] if match[high] else [])
    return max(values)


def _every_hours(match: re.Match[str]) -> tuple[float, FrequencyKind]:
    # "every 4 to 6 hours" allows a dose every 4 hours, so the most frequent reading is 6 a day.
    values = [_num(match["a"])] + ([_num(match["b"])] if match["b"] else [])
    shortest = min(values)
    return (24.0 / shortest if shortest > 0 else 0.0), "explicit"


def _fixed(per_day: float, kind: FrequencyKind = "explicit") -> Callable[[re.Match[str]], tuple[float, FrequencyKind]]:
    return lambda _match: (per_day, kind)


def _compile(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    return re.compile(pattern, flags | re.VERBOSE)


# What follows "twice" or "3 times": "a day", "daily", "per day", "/day", "in 24 hours", "in any 24-hour period".
_PER_DAY_WORDS = (
    r"(?:a\s+|per\s+|each\s+|every\s+|/\s*|in\s+(?:a\s+|any\s+)?)?"
    r"(?:day|daily|24[\s-]*(?:hours?|hrs?|h)(?:\s+period)?)"
)

_FREQUENCY_RULES: list[_Rule] = [
    # "every 6 hours", "q8h", "q 4-6 h", "every 4 to 6 hrs", "every four hours"
    (_compile(rf"(?:every|q)\s*(?P<a>{_N})(?:{_RANGE}(?P<b>{_N}))?\s*(?:hours?|hrs?|h)(?!\w)"), _every_hours),
    # "4-hourly", "4 to 6 hourly" (British prescription style)
    (_compile(rf"(?P<a>{_N})(?:{_RANGE}(?P<b>{_N}))?[\s-]*hourly(?!\w)"), _every_hours),
    (_compile(r"(?:every\s+hour|hourly)(?!\w)"), _fixed(24.0)),
    # "every other day", "on alternate days", "qod"
    (_compile(r"(?:every\s+(?:other|second)|on\s+alternate|alternate)\s+days?(?!\w)|(?:q\.?o\.?d|e\.?o\.?d)\.?(?!\w)"),
     _fixed(0.5)),
    # "every 3 days"
    (_compile(rf"every\s+(?P<a>{_N})\s+days(?!\w)"), lambda m: (1.0 / _num(m["a"]), "explicit")),
    # "three times a week", "2x per week" - weekly drugs such as methotrexate
    (_compile(rf"(?P<a>{_N})\s*(?:times|x)\s*(?:a|per|each|every|/)\s*week(?!\w)"),
     lambda m: (_num(m["a"]) / 7.0, "explicit")),
    (_compile(r"(?P<w>once|twice|thrice)?\s*(?:weekly|a\s+week|per\s+week|every\s+week|each\s+week|/\s*week)(?!\w)"),
     lambda m: (_TIMES_WORDS[m["w"].lower()] / 7.0 if m["w"] else 1.0 / 7.0, "explicit")),
    # "up to 4 times a day", "3-4 times daily", "three times a day", "2x/day", "4 times in 24 hours"
    (_compile(rf"(?:up\s+to\s+)?(?P<a>{_N})(?:{_RANGE}(?P<b>{_N}))?\s*(?:times|x)\s*{_PER_DAY_WORDS}(?!\w)"),
     lambda m: (_upper(m, "a", "b"), "explicit")),
    # "once daily", "twice a day", "up to twice daily"
    (_compile(rf"(?:up\s+to\s+)?(?P<w>once|twice|thrice)\s*{_PER_DAY_WORDS}(?!\w)"),
     lambda m: (float(_TIMES_WORDS[m["w"].lower()]), "explicit")),
    # Latin abbreviations, with or without dots. QDS/QID before QD so "q.d.s." is not read as "q.d."
    (_compile(r"(?:q\.?i\.?d|q\.?d\.?s)\.?(?!\w)"), _fixed(4.0)),
    (_compile(r"(?:t\.?i\.?d|t\.?d\.?s)\.?(?!\w)"), _fixed(3.0)),
    (_compile(r"(?:b\.?i\.?d|b\.?d)\.?(?!\w)"), _fixed(2.0)),
    (_compile(r"(?:o\.?d|q\.?d|q\.?a\.?m|q\.?p\.?m|q\.?h\.?s|mane|nocte)\.?(?!\w)"), _fixed(1.0)),
    # "OM" / "ON" (every morning / night) only in capitals: lower-case "on" is an ordinary word.
    (_compile(r"(?:OM|ON)(?!\w)", flags=0), _fixed(1.0)),
    # "at night", "at bedtime", "every morning", "in the evening"
    (_compile(r"(?:at\s+night|at\s+bedtime|nightly|before\s+bed(?:time)?|(?:every|each)\s+(?:night|morning|evening)"
               r"|in\s+the\s+(?:morning|evening))(?!\w)"),
     _fixed(1.0)),
    # "per day", "/day", "in 24 hours", "over 24 hours", "in any 24-hour period": a daily total
    (_compile(r"(?:per|/|in|over|within)\s*(?:any\s+|a\s+)?(?:day|d|24[\s-]*(?:hours?|hrs?|h)(?:\s+period)?)(?!\w)"),
     _fixed(1.0, "per_24h")),
    # "daily", "a day", "every day": once a day, or a limit when "max" comes before the amount
    (_compile(r"(?:daily|a\s+day|every\s+day|each\s+day)(?!\w)"), _fixed(1.0, "daily")),
]

# Words allowed between an amount and its frequency: punctuation, dosage forms, routes and "as
# needed" ("500 mg tablets orally PRN every 6 hours").
_FILLER = re.compile(
    r"""\s*(?:[,()\[\]:]|(?:tablets?|tabs?|capsules?|caps?|pills?|orally|oral|by\s+mouth|p\.?o\.?|iv|im|sc|
    s/c|subcut(?:aneously)?|intravenously|(?:to\s+be\s+)?taken|take|given|each|of|as\s+(?:needed|required)|
    when\s+required|if\s+needed|prn|p\.r\.n\.)(?!\w))""",
    re.IGNORECASE | re.VERBOSE,
)
# Any other single word (typically the drug name, "400 mg ibuprofen TDS"), except words that start
# a new clause: after "500 mg for 5 days then..." the next frequency belongs to something else.
_OTHER_WORD = re.compile(
    r"\s*(?!(?:and|or|then|plus|but|for|if|until|followed|after|reducing|increasing|increased|reduced|over)(?!\w))"
    r"[a-z][a-z'-]*(?!\w)",
    re.IGNORECASE,
)
_MAX_OTHER_WORDS = 2
_SENTENCE_END = re.compile(r"\s*(?:[.!?](?:\s|$)|[;\n])")
# Sentence boundaries for finding the drug a dose belongs to: ". " but not the "." of "1.5".
_SENTENCE_BREAK = re.compile(r"[.!?](?=\s)|[;\n]")

# Words before an amount that make a following "daily"/"a day" a limit rather than a schedule:
# "maximum of 3 g per day", "max 4 g daily", "do not exceed 4 g a day".
_MAX_PREFIX = re.compile(
    r"(?:max(?:imum)?\.?|up\s+to|no\s+more\s+than|not\s+more\s+than|(?:do\s+)?not\s+(?:to\s+)?exceed(?:ing)?|"
    r"limit(?:ed)?\s+to|at\s+most|a\s+total\s+of|total\s+of)(?:\s+(?:dose|of|is))*[\s:]*$",
    re.IGNORECASE,
)
# Words before an amount that make it a daily total whatever follows: "maximum daily dose of 4 g",
# "total daily dose 2 g", "24-hour maximum of 4 g".
_DAILY_PREFIX = re.compile(
    r"(?:daily|24[\s-]*hours?|a\s+day's)\s+(?:max(?:imum)?\s+)?(?:dose|total|amount|maximum|max|limit)"
    r"(?:\s+(?:of|is))*[\s:]*$",
    re.IGNORECASE,
)
_PREFIX_WINDOW = 40  # characters looked at before an amount for "max" / "daily dose of"
# Between a drug name and its amount: "Paracetamol 500 mg", "paracetamol: 500 mg", "paracetamol (500 mg".
_ADJACENT_GAP = re.compile(r"[\s:,(–-]*")
# Between an amount and a drug named after it: "1 g paracetamol", "1 g of paracetamol".
_FOLLOWING_GAP = re.compile(r"\s*(?:of\s+)?")


@dataclass(frozen=True, slots=True)
class DoseMention:
    """One amount with a unit found in text, normalised, with its schedule when one is given.

    Attributes:
        text: the matched text, ``text[span[0]:span[1]]`` of the input.
        span: start and end offsets of the mention in the input, from the tablet count (or the
            amount) to the end of the frequency phrase when there is one.
        drug: the drug name this dose belongs to, spelled as in ``drug_names``, or None when no
            known name is near it (or no names were given).
        amount: strength of one unit (tablet, dose) in ``unit``; the upper bound of a range.
        unit: "mg" for any mass (g and mcg are converted), "units" or "mL".
        count: tablets (or other units) taken per dose: 2 for "two 200 mg tablets".
        per_dose: ``count * amount``; None when the amount is a stated daily total.
        frequency_per_day: doses a day (0.5 every other day, 1/7 weekly); None when not given.
        daily_total: amount per day: ``per_dose * frequency_per_day``, or the stated daily amount;
            None when there is no frequency.
        stated_daily: the text states a daily amount ("max 4 g in 24 hours", "3 g per day")
            rather than a dose and a frequency.
    """

    text: str
    span: tuple[int, int]
    drug: str | None
    amount: float
    unit: CanonicalUnit
    count: float
    per_dose: float | None
    frequency_per_day: float | None
    daily_total: float | None
    stated_daily: bool


def normalise_amount(value: float, unit: str) -> tuple[float, CanonicalUnit]:
    """Convert an amount to its canonical unit: masses to mg, units and mL unchanged.

    Args:
        value: the number as written.
        unit: a unit spelling such as "g", "mcg", "µg", "micrograms", "IU", "mL" (any case).

    Raises:
        ValueError: the unit is not one this module knows; the message lists the known ones.
    """
    key = unit.strip().lower()
    if key not in _UNIT_FACTORS:
        known = ", ".join(sorted(_UNIT_FACTORS))
        raise ValueError(f"unknown dose unit {unit!r}; known units: {known}")
    factor, canonical = _UNIT_FACTORS[key]
    return _round(value * factor), canonical


def parse_doses(text: str, drug_names: Iterable[str] | None = None) -> list[DoseMention]:
    """Find every dose (an amount with a unit) in ``text``, in order of appearance.

    Args:
        text: free text, e.g. a model's answer.
        drug_names: names (generic, brand, alias) to attribute doses to, matched case-insensitively
            on word boundaries. A dose belongs to a name written right before it ("Paracetamol
            500 mg"), else one right after it ("1 g of paracetamol"), else the nearest name
            earlier in the same sentence. Leave out to parse amounts only.

    Returns:
        One ``DoseMention`` per amount; ranges keep their upper bound.
    """
    matches = list(_DOSE.finditer(text))
    names = _drug_mentions(text, tuple(drug_names or ()))
    mentions: list[DoseMention] = []
    for index, match in enumerate(matches):
        limit = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        mention = _mention(text, match, limit, names)
        if mention is not None:
            mentions.append(mention)
    log.debug("parsed %d dose(s) from %d characters", len(mentions), len(text))
    return mentions


# --- internals -----------------------------------------------------------------------------------


def _round(value: float) -> float:
    """Drop float noise such as 0.30000000000000004 from unit conversions."""
    return round(value, 6)


def _mention(
    text: str, match: re.Match[str], limit: int, names: list[tuple[int, int, str]]
) -> DoseMention | None:
    """Build a DoseMention from one amount match; None if its units cannot be combined."""
    amount, unit = normalise_amount(_num(match["amount"]), match["unit"])
    if match["amount_hi"]:
        amount = max(amount, normalise_amount(_num(match["amount_hi"]), match["unit"])[0])
    if match["amount2"]:
        second, second_unit = normalise_amount(_num(match["amount2"]), match["unit2"])
        if second_unit == unit:
            amount = max(amount, second)
    if amount <= 0:
        return None

    count, start = _count(match)
    unit_end = match.end("unit2") if match["unit2"] else match.end("unit")
    per_day, kind, end = _frequency(text, match.end(), limit)

    before = text[max(_sentence_start(text, start), start - _PREFIX_WINDOW) : start]
    capped = _MAX_PREFIX.search(before) is not None
    stated = (
        kind == "per_24h"
        or (kind == "daily" and capped)
        or (kind is None and _DAILY_PREFIX.search(before) is not None)
    )

    total = _round(count * amount)
    if stated:
        per_dose, frequency, daily = None, None, total
    else:
        per_dose = total
        frequency = _round(per_day) if per_day is not None else None
        daily = _round(total * per_day) if per_day is not None else None
    end = max(end, match.end())
    return DoseMention(
        text=text[start:end],
        span=(start, end),
        drug=_drug_for(text, start, unit_end, names),
        amount=amount,
        unit=unit,
        count=count,
        per_dose=per_dose,
        frequency_per_day=frequency,
        daily_total=daily,
        stated_daily=stated,
    )


def _count(match: re.Match[str]) -> tuple[float, int]:
    """Tablets per dose and where the mention starts.

    A leading number is a count only when the text says so: "2 x 500 mg", "2 tablets of 500 mg",
    "2 tablets (500 mg each)", or a dosage form after the amount ("two 200 mg tablets").
    Otherwise ("day 3 500 mg") it is ignored and the mention starts at the amount.
    """
    if match["count"] is None:
        return 1.0, match.start("amount")
    link = match["link"].strip()
    if not link and match["form"] is None:
        return 1.0, match.start("amount")
    return _upper(match, "count", "count_hi"), match.start("count")


def _frequency(text: str, pos: int, limit: int) -> tuple[float | None, FrequencyKind | None, int]:
    """The frequency phrase after an amount: (doses per day, kind, end offset).

    Scans forward from ``pos`` over filler ("tablets", "orally", the drug name) and stops at the
    end of the sentence or the next amount; returns (None, None, pos) when there is no frequency,
    so skipped words are not counted as part of the mention.
    """
    start, other_words = pos, 0
    while pos < limit:
        for pattern, reading in _FREQUENCY_RULES:
            found = pattern.match(text, _skip_space(text, pos), limit)
            if found:
                per_day, kind = reading(found)
                return per_day, kind, found.end()
        if _SENTENCE_END.match(text, pos, limit):
            break
        filler = _FILLER.match(text, pos, limit)
        if filler and filler.end() > pos:
            pos = filler.end()
            continue
        word = _OTHER_WORD.match(text, pos, limit)
        if word and other_words < _MAX_OTHER_WORDS:
            other_words += 1
            pos = word.end()
            continue
        break
    return None, None, start


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _sentence_start(text: str, pos: int) -> int:
    """Offset just after the last sentence break before ``pos`` (0 when there is none)."""
    start = 0
    for found in _SENTENCE_BREAK.finditer(text, 0, pos):
        start = found.end()
    return start


@lru_cache(maxsize=32)
def _name_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of all names, longest first so "isosorbide mononitrate" beats a prefix."""
    parts = sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True)
    if not parts:
        return None
    alternatives = "|".join(r"\s+".join(re.escape(word) for word in name.split()) for name in parts)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _drug_mentions(text: str, names: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(start, end, name as given in ``names``) for every drug name in ``text``."""
    pattern = _name_pattern(names)
    if pattern is None:
        return []
    spelled = {" ".join(n.lower().split()): n.strip() for n in names}
    return [(m.start(), m.end(), spelled[" ".join(m.group().lower().split())]) for m in pattern.finditer(text)]


def _drug_for(text: str, start: int, unit_end: int, names: list[tuple[int, int, str]]) -> str | None:
    """The drug a dose starting at ``start`` (unit ending at ``unit_end``) belongs to."""
    preceding = [n for n in names if n[1] <= start]
    if preceding and _ADJACENT_GAP.fullmatch(text, preceding[-1][1], start):
        return preceding[-1][2]
    for name_start, _end, name in names:
        if name_start >= unit_end and _FOLLOWING_GAP.fullmatch(text, unit_end, name_start):
            return name
    sentence_start = _sentence_start(text, start)
    in_sentence = [n for n in preceding if n[0] >= sentence_start]
    return in_sentence[-1][2] if in_sentence else None
