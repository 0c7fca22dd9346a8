"""Redaction of personal identifiers (PHI/PII) from free text before it is stored.

Each identifier found is replaced by a typed placeholder such as ``[NAME]`` or ``[MRN]``; what
is kept is the redacted text and how many of each type were replaced, never the values.

Detection is rule-based and leans on context, because clinical text is full of things that look
like identifiers and are not: doses, vitals, lab values, drug and disease names. So:

- Names are taken after a cue: a title (Mr, Mrs, Ms, Miss, Mx, Dr, Prof) or a clinical cue word
  (patient, pt, client, name:, son of, his wife, on behalf of, next of kin); "Parkinson's disease"
  is never one. Then names without a cue are found by ``names.find_names`` (from the words
  themselves: a lexicon of English words and proper names, medical eponyms, medicines), on the
  text the cued rules have already redacted, so that a cue word is never taken for a name ("Date
  of birth"). Once a name is found, its later bare mentions in the same text are redacted too.
  Clinicians' names ("Dr. Sarah Lee") are redacted like patients': a clinician's name is still a
  person's name, in a small service it narrows down who the patient was, and the text rarely says
  which role a name has. The title is kept so the sentence still reads.
- Dates are only redacted when a cue ties them to the patient: a date of birth (DOB, date of
  birth, born on), an admission, discharge, operation or death. Other dates are kept: they are
  what a clinical answer is about. A year alone is kept. Ages are kept up to 89.
- MRNs only after a cue (MRN, medical record number, hospital number, patient ID).
- NHS numbers after an "NHS" cue, or bare (``943 476 5919``, ``9434765919``) when the
  modulus-11 check digit holds. A cued number is redacted even if its check digit fails: a
  mistyped NHS number is still an identifier.
- Phone numbers, emails, SSNs, street addresses, postcodes, IP addresses and identifying URLs by
  their shape, with guards that keep dates, ranges, ratios, versions and decimals out; card
  numbers (Luhn), NPIs and Medicare MBIs by their check digit or format.

Rules run in a fixed order on the text as redacted so far; placeholders contain no digits and
no lower-case letters, so no rule matches one, and redacting twice changes nothing. A rule is
only searched for when the text holds the digits (or the characters, such as ``@``) that any of
its matches needs: most clinical text has few digits, and this skips most searches.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .names import find_names

log = logging.getLogger(__name__)

PHI_TYPES: tuple[str, ...] = (
    "NAME", "MRN", "NHS", "PHONE", "EMAIL", "ADDRESS", "SSN", "DOB", "MBI", "NPI", "CARD", "IP", "URL", "DATE", "AGE",
)  # fmt: skip


class Redaction(BaseModel):
    """The result of redacting one text."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="The text with every identifier found replaced by its placeholder.")
    counts: dict[str, int] = Field(
        default_factory=dict, description="Placeholder type -> how many were replaced (types with none are left out)."
    )


def placeholder(kind: str) -> str:
    """The placeholder written in place of an identifier of type ``kind`` (e.g. ``[NAME]``)."""
    return f"[{kind}]"


# A match picks the span to replace (the identifier, not its cue), or None to keep it.
_Pick = Callable[[re.Match[str]], tuple[int, int] | None]


@dataclass(frozen=True)
class _Rule:
    kind: str  # placeholder type, one of PHI_TYPES
    pattern: re.Pattern[str]
    pick: _Pick | None = None  # default: the span of group "v", else the whole match
    # Cheap tests that skip the search when it cannot succeed: most rules need some digits
    # (``digits``: the fewest that any redacted match holds), some need a character sequence
    # (``needs``: one of these must be in the text). Placeholders hold neither, so what holds
    # for the text as given holds for it as redacted so far.
    digits: int = 0
    needs: tuple[str, ...] = ()

    def may_match(self, text: str, digits: int) -> bool:
        """Whether this rule can redact anything in ``text``, which holds ``digits`` digits."""
        return digits >= self.digits and (not self.needs or any(s in text for s in self.needs))


# ----- shared pieces -----

_MONTH = (
    r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?[\s-]+{_MONTH}[\s,-]+\d{{2,4}}"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?![\d/])"
)
_US_STATE = (
    r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH"
    r"|NJ|NM|NY|NC|ND|OH|OK|OR|PA|PR|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY)"
)
# Outward code, then the inward code whose letters never include C, I, K, M, O or V
# (which keeps "B12 5MG" and similar out).
_UK_POSTCODE = r"(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?|GIR)\s?\d[ABD-HJLNP-UW-Z]{2}(?![\w-])"
_STREET_SUFFIX = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Close|Way|Place|Pl"
    r"|Terrace|Crescent|Square|Sq|Gardens|Grove|Park|Hill|Row|Mews|Parkway|Pkwy|Highway|Hwy|Walk|Rise|Circle)"
)
_NOT_A_CITY = r"(?!(?:Patient|Pt|He|She|They|The|Dr|Mr|Mrs|Ms|Miss|No|Nil|Seen|Reviewed)\b)"
_STREET = (
    r"(?<![\w.,/-])(?:(?:Flat|Apartment|Apt|Unit|Suite|Ste)\.?\s*\d+[A-Za-z]?,?\s+)?"
    rf"\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][A-Za-z'’]+\s+){{1,3}}{_STREET_SUFFIX}(?![\w'’])"
    # "Dr" followed by a capitalised word (or a name already redacted) is a title, not a street.
    r"(?!(?<=Dr)\.?\s+(?:[A-Z][a-z]|\[))\.?"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,\s*(?:Apt|Suite|Unit|Flat)\.?\s*\w+)?"
    rf"(?:,\s*{_NOT_A_CITY}[A-Z][a-z]+(?:[ -][A-Z][a-z]+){{0,2}})?"
    rf"(?:,?\s+{_US_STATE}\s+\d{{5}}(?:-\d{{4}})?(?![\w-])|,?\s+{_UK_POSTCODE})?"
)

# ----- names -----

_TITLE = r"(?:Mrs|Mr|Ms|Miss|Mx|Dr|Prof)(?:\.\s*|\s+)"
_RELATIVE = (
    r"(?:[Ss]on|[Dd]aughter|[Ww]ife|[Hh]usband|[Mm]other|[Ff]ather|[Bb]rother|[Ss]ister|[Pp]artner|[Ss]pouse"
    r"|[Cc]arer|[Gg]uardian)"
)
_NAME_CUE = (
    r"(?:(?:[Pp]atient|PATIENT|[Cc]lient|[Pp]t\.?)(?:\s*[:,]\s*|\s+)"
    r"|(?:[Nn]ame|NAME)(?:\s*[:-]\s*|\s+is\s+)|[Nn]amed\s+"
    rf"|{_RELATIVE}\s+of\s+|(?:[Hh]is|[Hh]er|[Tt]heir)\s+{_RELATIVE}(?:\s*,\s*|\s+)"
    r"|[Oo]n\s+behalf\s+of\s+|[Aa]ccompanied\s+by\s+|(?:[Nn]ext\s+of\s+kin|NOK)\s*:?\s*)"
)


def _latin(keep: Callable[[str], bool]) -> str:
    """A character class of the Latin letters (basic, Latin-1, Extended-A and -B, Extended
    Additional) that ``keep`` accepts, so names such as Żal, Vũ and Röhrdanz are words too."""
    codes = [*range(0x41, 0x250), *range(0x1E00, 0x1F00)]
    return "[" + "".join(re.escape(chr(c)) for c in codes if chr(c).isalpha() and keep(chr(c))) + "]"


_UP = _latin(str.isupper)
_LOW = _latin(str.islower)
# O'Brien, D'Souza, McDonald, MacLeod, Anna-Marie, Smith-Jones, Çamurcuoğlu.
_NAME_WORD = rf"(?:{_UP}{_LOW}*['’])?(?:Ma?c)?{_UP}{_LOW}+(?:-{_UP}{_LOW}+)*"
_PARTICLE = r"(?:van|von|de|der|den|da|del|della|di|du|la|le|bin|ibn|al|el)"
# Up to two initials ("J. Doe", "J.D. Smith"), then one to three words ("Maria de la Cruz").
_NAME_PHRASE = (
    rf"(?:(?:{_UP}\.\s?){{1,2}}|{_UP}\s)?{_NAME_WORD}(?:\s(?:{_PARTICLE}\s){{0,2}}{_NAME_WORD}){{0,2}}(?!{_UP}|{_LOW})"
)
_NAME = re.compile(rf"(?P<lead>(?<![\w.]){_NAME_CUE}(?:{_TITLE})?|(?<![\w.]){_TITLE})(?P<name>{_NAME_PHRASE})")

# Capitalised words that follow a cue without being a name ("Patient Health Questionnaire",
# "patient Education", "seen by Dr on Monday"). A name stops at the first of these.
_NOT_NAMES = frozenset(
    """
    An And Or But With Without Is Was Has Had Have Presents Presented Reports Reported Denies Says States
    Name Names Number No Nos ID Id Information Info Health Questionnaire Group Direction Directions Care Centred
    Centered Education Record Records History Details Summary Safety Controlled Transport Portal Advice Leaflet
    Leaflets Experience Experiences Services Service Type Age Aged Male Female Today Yesterday Tomorrow Monday
    Tuesday Wednesday Thursday Friday Saturday Sunday Ward Unit Clinic Hospital Department Team Cardiology
    Oncology Surgery Medicine Radiology Neurology Psychiatry Paediatrics Pediatrics Orthopaedics Orthopedics
    Dermatology Gastroenterology Haematology Hematology Nephrology Urology Respiratory Rheumatology Endocrinology
    Obstetrics Gynaecology Gynecology Ophthalmology Emergency Practitioner Advocate Advocacy Liaison Consent Forum
    Participation Discharge Transfer Note Notes Allergies Allergy Medication Medications Observations Plan
    Assessment Problem Problems Concerns Concern Please Thanks Thank Dear Regards Reviewed Review Seen Admitted
    Discharged Known Unknown Not Nil None He She They It We His Her Their This That These Those Also On In At
    To For From By Of If When Then Given Started Stopped Continue Continued Identifier Demographics Feedback
    Satisfaction Survey Pathway Journey List Lists Access Charter Rights Choice Mr Mrs Ms Miss Mx Dr Prof
    """.split()
)
# "Parkinson's disease", "Crohn's", "Down syndrome": a word followed by one of these is a condition.
_EPONYM_TAIL = re.compile(r"(?:['’]s?)?\s+(?:disease|syndrome|palsy|phenomenon|lymphoma|sarcoma|tumou?r|ulcer)\b")
_NAME_BEFORE_CUE = re.compile(
    r"(?i)(?:brand|generic|drug|trade|product|proprietary|medication|medicine|condition|disease|test|file|user"
    r"|device|street|road|place|company|practice|hospital|ward)\s*$"
)
_WORD = re.compile(r"\S+")


def _pick_name(m: re.Match[str]) -> tuple[int, int] | None:
    """The span of the name after a cue, without trailing non-name words; None if there is no name."""
    text, lead = m.string, m.group("lead")
    if lead[:4].lower() == "name" and _NAME_BEFORE_CUE.search(text, 0, m.start()):
        return None  # "brand name: Tylenol" names a product
    start, end = m.start("name"), m.start("name")
    for word in _WORD.finditer(text, m.start("name"), m.end("name")):
        token = word.group().rstrip(".")
        if len(token) > 1 and (token in _NOT_NAMES or _EPONYM_TAIL.match(text, word.end())):
            break
        end = word.end()
    if end == start or not re.search(_LOW, text[start:end]):
        return None  # nothing left, or initials only
    # After "my patient, " a name is an aside closed by punctuation; otherwise the comma
    # introduced an ordinary sentence ("Discussed with patient, Paracetamol 1 g given").
    if "," in lead and not re.match(r"\s*(?:[,.;:)]|$)", text[end:]):
        return None
    return start, end


def _redact_names(text: str) -> tuple[str, int]:
    """Replace names after cues, then names without one, then later bare mentions of the names found."""
    text, n, found = _substitute(text, _NAME, "NAME", _pick_name)
    bare = find_names(text)
    if bare:
        found += [text[start:end] for start, end in bare]
        n += len(bare)
        pieces, pos = [], 0
        for start, end in bare:
            pieces += [text[pos:start], placeholder("NAME")]
            pos = end
        text = "".join(pieces) + text[pos:]
    # A name seen once ("Mr. Jones") is the same person when it recurs bare ("Jones reports").
    # Initials, particles and two-letter names are left alone: they collide with abbreviations
    # and ordinary words (Li, Ca, de).
    tokens = {name for name in found if " " in name}
    tokens |= {w for name in found for w in name.split() if len(w) >= 3 and re.fullmatch(_NAME_WORD, w)}
    tokens = {t for t in tokens if t in text}  # most texts never name anyone again: no pattern to build
    if tokens:
        alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        again = re.compile(rf"(?<![\w'’-])(?:{alternatives})(?![\w-])")
        text, more, _ = _substitute(text, again, "NAME", None)
        n += more
    return text, n


# ----- phone and NHS numbers -----


def _nhs_check_digit_ok(digits: str) -> bool:
    """Whether a 10-digit NHS number's last digit is its modulus-11 check digit."""
    if len(digits) != 10 or len(set(digits)) == 1:
        return False  # 0000000000 passes the arithmetic but is no one's number
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1)))
    check = (11 - total % 11) % 11
    return check != 10 and check == int(digits[9])


def _pick_valid_nhs(m: re.Match[str]) -> tuple[int, int] | None:
    """Group "v" if it is a valid NHS number; a bare 10-digit number without one is left to the phone rules."""
    return m.span("v") if _nhs_check_digit_ok(re.sub(r"\D", "", m.group("v"))) else None


def luhn_ok(digits: str) -> bool:
    """Whether a digit string ends in its Luhn check digit (card numbers; NPIs after an 80840 prefix)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def _pick_card(m: re.Match[str]) -> tuple[int, int] | None:
    digits = re.sub(r"\D", "", m.group())
    return m.span() if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits) else None


def _pick_npi(m: re.Match[str]) -> tuple[int, int] | None:
    """A bare 10-digit number starting 1 or 2 whose last digit is the NPI check digit."""
    return m.span("v") if luhn_ok("80840" + m.group("v")) else None


def _pick_old_age(m: re.Match[str]) -> tuple[int, int] | None:
    """An age over 89: Safe Harbor counts it as an identifier (few people are that old)."""
    group = "v" if m.group("v") is not None else "v2"
    return m.span(group) if 90 <= int(m.group(group)) <= 130 else None


# Four dotted numbers after one of these are a version, not an IP address.
_VERSION_CUE = re.compile(r"(?i:\b(?:version|ver\.?|v|firmware|software|release|build)\s*)\Z")
# A number right after one of these is a code (a drug's NDC, a diagnosis, a batch), not a phone number.
_CODE_CUE = re.compile(r"(?i:\b(?:NDC|ICD(?:-?10|-?9)?|SNOMED|LOINC|CPT|lot|batch)\b[\s:#]*)\Z")


def _phone_shaped(candidate: str) -> bool:
    """9 to 15 digits, with a bracketed area code, a leading +, or a group of 4 or more digits."""
    digits = re.sub(r"\D", "", candidate)
    if not 9 <= len(digits) <= 15:
        return False
    return "(" in candidate or candidate.startswith("+") or any(len(g) >= 4 for g in re.findall(r"\d+", candidate))


def _pick_phone(m: re.Match[str]) -> tuple[int, int] | None:
    # A cue followed by a short number ("phone 2 times") is not a phone number.
    return m.span("v") if 7 <= len(re.sub(r"\D", "", m.group("v"))) <= 15 else None


# MBI: CMS's 11-character Medicare Beneficiary Identifier (no letters S, L, O, I, B, Z), often
# written in groups of 4, 3 and 4.
_MBI_A = "[AC-HJKMNP-RT-Y]"
_MBI_AN = "[AC-HJKMNP-RT-Y0-9]"
_MBI = rf"[1-9]{_MBI_A}{_MBI_AN}\d-?{_MBI_A}{_MBI_AN}\d-?{_MBI_A}{_MBI_A}\d\d"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# A URL carries an identifier when its path or query holds a number of 4 or more digits, an email,
# or a key that names a person or record; a guideline's address ("nhs.uk/conditions/asthma/") does not.
_URL = r"(?:https?://|www\.)[^\s<>\"']+"
_URL_IDENTIFIES = re.compile(r"\d{4,}|@|(?i:[?&/](?:patient|user|mrn|id|uid|name|email|account)[=/_-])")

_DIGIT = re.compile(r"\d")  # the digits the rules' \d matches (any decimal digit)

# Order matters: specific, cued rules first, so an MRN or a date of birth is not taken for a phone.
_RULES: tuple[_Rule, ...] = (
    _Rule("URL", re.compile(_URL), lambda m: m.span() if _URL_IDENTIFIES.search(m.group()) else None, needs=("://", "www.")),
    _Rule("EMAIL", re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), needs=("@",)),
    _Rule(
        "IP",
        re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)"),
        lambda m: None if _VERSION_CUE.search(m.string, 0, m.start()) else m.span(),
        digits=4,
    ),
    _Rule("IP", re.compile(r"(?<![\w:])(?i:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){7}|(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*)(?![\w:])"), needs=(":",)),
    _Rule("CARD", re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)"), _pick_card, digits=13),
    _Rule("MBI", re.compile(rf"(?<![\w-]){_MBI}(?![\w-])"), digits=5),
    _Rule(
        "NPI",
        re.compile(r"(?i:\bNPI)(?:\s*(?i:number|no\.?|#))?\s*[:#]?\s*(?P<v>\d{10})(?!\d)"),
        digits=10,
    ),
    _Rule(
        "DATE",
        re.compile(
            r"(?i:\badmitted(?:\s+(?:on|to\s+\w+\s+on))?|\badmission(?:\s+date)?(?:\s+(?:on|of))?|\bdate\s+of\s+"
            r"(?:admission|discharge|death)|\bdischarged(?:\s+(?:home|to\s+\w+))?(?:\s+on)?|\bdischarge(?:\s+date)?"
            r"|\bdied(?:\s+on)?|\bdate\s+of\s+surgery|\boperated\s+on)"
            rf"\s*(?:[:=-]|is|was)?\s*(?P<v>{_DATE})"
        ),
        digits=3,
    ),
    _Rule(
        "AGE",
        re.compile(
            r"(?i:(?<![\w.])(?P<v>\d{2,3})(?:[- ]?years?[- ]old|[- ]?y(?:ea)?rs?\b|[- ]?y/?o\b)"
            r"|\baged?\s*:?\s*(?P<v2>\d{2,3})\b)"
        ),
        _pick_old_age,
        digits=2,
    ),
    _Rule(
        "SSN",
        re.compile(
            r"(?i:\bSSN|\bsocial\s+security(?:\s+(?:number|no\.?))?)\s*(?:#|:|is)?\s*"
            r"(?P<v>\d{3}[-\s]?\d{2}[-\s]?\d{4})(?![\d-])"
        ),
        digits=9,
    ),
    _Rule("SSN", re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), digits=9),
    _Rule(
        "MRN",
        re.compile(
            r"(?i:\bMRN|\bmed(?:ical)?\s+rec(?:ord)?\s+(?:number|no\.?|#)|\bhosp(?:ital)?\s+(?:number|no\.?|#|id)"
            r"|\bpatient\s+(?:id|identifier|number|no\.?)|\bunit\s+number|\bchart\s+(?:number|no\.?|#))"
            r"\s*(?:[:#=]|is)?\s*(?P<v>(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{3,15})(?![\w-])"
        ),
        digits=1,
    ),
    _Rule(
        "NHS",
        re.compile(
            r"\bNHS\s*(?i:number|no\.?|num|#)?\s*[:#]?\s*(?P<v>\d{3}[\s-]?\d{3}[\s-]?\d{4})(?![\w-])"
        ),
        digits=10,
    ),
    _Rule(
        "DOB",
        re.compile(
            r"(?i:\bDOB|\bD\.O\.B\.?|\bdate\s+of\s+birth|\bbirth\s*date|\bborn(?:\s+on)?)"
            rf"\s*(?:[:=-]|is|was)?\s*(?P<v>{_DATE})"
        ),
        digits=3,
    ),
    _Rule(
        "PHONE",
        re.compile(
            r"(?i:\btel(?:ephone)?|\bphone|\bmob(?:ile)?|\bcell|\bfax)\.?\s*(?i:no\.?|number|#)?\s*[:.]?\s*"
            r"(?P<v>\+?\(?\d[\d().\- ]{5,17}\d)(?![\w-])"
        ),
        _pick_phone,
        digits=7,
    ),
    _Rule("NPI", re.compile(r"(?<![\w+(/.,-])(?P<v>[12]\d{9})(?![\w/-]|[.,]\d)"), _pick_npi, digits=10),
    # Bare NHS numbers are written in spaces or not at all; dashed 3-3-4 is left to the US phone rule.
    _Rule(
        "NHS",
        re.compile(r"(?<![\w+(/.,-])(?<!\+1 )(?P<v>\d{3} \d{3} \d{4}|\d{10})(?![\w/-]|[.,]\d)"),
        _pick_valid_nhs,
        digits=10,
    ),
    _Rule("PHONE", re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\d){6,13}(?![\w-]|[.,]\d)"), digits=7),
    _Rule(
        "PHONE",
        re.compile(
            r"(?<![\w+/.-])(?:(?:00|\+)1[ .-]?)?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
            r"(?:\s*(?i:x|ext\.?)\s*\d{1,5})?(?![\w/-]|[.,]\d)"
        ),
        digits=10,
    ),
    _Rule("PHONE", re.compile(r"(?<![\w+./-])0[1-9](?:[ -]?\d){8,9}(?![\w/-]|[.,]\d)"), digits=10),
    # Other numbering plans: groups of digits with a group of 4 or more, or an area code in
    # brackets, 9 to 15 digits in all; lab values in a row ("135 128 119") have no such group.
    _Rule(
        "PHONE",
        re.compile(
            r"(?<![\w+/.-])\+?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]?\(?\d{2,5}\)?){1,4}(?:\s*(?i:x|ext\.?)\s*\d{1,5})?"
            r"(?![\w/-]|[.,]\d)"
        ),
        lambda m: m.span() if _phone_shaped(m.group()) and not _CODE_CUE.search(m.string, 0, m.start()) else None,
        digits=9,
    ),
    # Any other run of 9 to 15 digits is an identifying number of some kind (clinical values are shorter).
    _Rule("PHONE", re.compile(r"(?<![\w+./-])\d{9,15}(?![\w/-]|[.,]\d)"), digits=9),
    _Rule("ADDRESS", re.compile(_STREET), digits=1),
    # A ZIP code is only taken after a state ("Springfield, IL 62704") or a cue; the state itself is kept.
    _Rule(
        "ADDRESS",
        re.compile(
            rf"(?<![\w-])(?:{_US_STATE},?|(?i:zip(?:\s*code)?)\s*:?)\s+(?P<v>\d{{5}}(?:-\d{{4}})?)(?![\w-]|[.,]\d)"
        ),
        digits=5,
    ),
    _Rule("ADDRESS", re.compile(rf"(?<![\w-]){_UK_POSTCODE}"), digits=1),
)


def _substitute(
    text: str, pattern: re.Pattern[str], kind: str, pick: _Pick | None
) -> tuple[str, int, list[str]]:
    """Replace what ``pattern`` and ``pick`` select with ``kind``'s placeholder.

    Returns the new text, how many were replaced, and the replaced values (for name recurrence).
    A rejected match is retried one character further on, so a real identifier inside a
    rejected candidate ("Patient Information Mr Jones") is still found.
    """
    out: list[str] = []
    values: list[str] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if pick is not None:
            span = pick(m)
        else:
            span = m.span("v") if "v" in pattern.groupindex else m.span()
        if span is None:
            out.append(text[pos : m.start() + 1])
            pos = m.start() + 1
            continue
        start, end = span
        out.append(text[pos:start])
        out.append(placeholder(kind))
        values.append(text[start:end])
        pos = end
    out.append(text[pos:])
    return "".join(out), len(values), values


def redact(text: str) -> Redaction:
    """Replace the personal identifiers in ``text`` with typed placeholders.

    Args:
        text: free text (a question, an answer, a clinician's edit or comment).

    Returns:
        The redacted text, and how many identifiers of each type were replaced. Redacting the
        result again returns it unchanged with no counts.
    """
    counts: Counter[str] = Counter()
    digits = len(_DIGIT.findall(text))
    for rule in _RULES:
        if rule.may_match(text, digits):
            text, n, _ = _substitute(text, rule.pattern, rule.kind, rule.pick)
            counts[rule.kind] += n
    text, n = _redact_names(text)
    counts["NAME"] += n
    found = {kind: n for kind in PHI_TYPES if (n := counts[kind])}
    if found:
        log.debug("redacted %s", found)
    return Redaction(text=text, counts=found)


def redact_many(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Redact each of ``texts``; return the redacted texts in order and the summed counts."""
    out: list[str] = []
    total: Counter[str] = Counter()
    for text in texts:
        result = redact(text)
        out.append(result.text)
        total.update(result.counts)
    return out, {kind: total[kind] for kind in PHI_TYPES if total[kind]}
