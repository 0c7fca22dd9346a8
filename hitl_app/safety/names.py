"""Finding people's names in clinical text without a cue word.

``find_names(text)`` returns the spans of names that the redaction rules' cues ("Mr", "patient",
"his wife") do not introduce: "Emily Chen was seen", "give ibuprofen to Tunde", "Ahmed Hassan's
potassium". It reads a lexicon shipped in ``hitl_app/data/lexicon/``: SCOWL's English word lists
(written by ``lexicon_build.py``) and the project's lists of medical eponyms, medicines, clinical
shorthand and countries, with the drug table. Nothing is downloaded and no model runs.

Each capitalised word is weighed by what the lexicon says of it:

- it **starts** a name when it is a known proper name that is no ordinary word (Emily, Chen), a
  word no list knows (Zakhele, Çamurcuoğlu), or a word of a script without capitals (Arabic,
  Chinese, Devanagari, Georgian) in English text;
- it **joins** a name that another word starts when it is an ordinary word that is also a name
  (Rose, Baker), any ordinary word mid-sentence, where its capital is meaningful ("Jade"), an
  eponym, a country, a medicine, clinical shorthand ("Hx", "Abdo") or a rarer word ("Emily Wells",
  "Alvin Marshall", "Yasmin Almeida");
- it is **no name** when it is an ordinary word at the start of a sentence (its capital says
  nothing there), a day, month, title, people or language, or a clinical word by its ending (INN
  stems such as -pril; -itis, -bacter).

Neighbouring capitalised words, with particles ("da", "van", "Mac", "Ó") between them, form a run,
and its pieces between words that are no name are weighed in turn. A piece is a name when a word
of it starts one; a piece of known names that are all ordinary words ("Rose Baker", "John") only
where a person is spoken to or of ("spoke to John", "Rose Baker was"). A piece is a term, not a
person, when a clinical noun follows or ends it ("Parkinson's disease", "Lister ward", "Morse
Fall Scale", "Efudix cream"), a number follows it ("Ward 7B", "Forrest IIa"), a route comes before
it ("IV Artesunate"), or it is a genus before its species ("Staphylococcus aureus"). A name takes in the particles and initials before it ("da Mota-Alves",
"K. Németh") and a surname written first ("Hart, Jane:"). Acronyms ("NSAIDs", "HbA1c") and
contractions ("I've") are never names, and a run never crosses a placeholder or punctuation.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from functools import lru_cache

from ..core.shipped import shipped_file
from .drugtable import load_drug_table

LEXICON_DIR = shipped_file("lexicon")

# A word: letters of any script, an elided prefix ("O'", "D'", "N'") and hyphenated parts; a
# possessive "'s" is left outside it.
_LETTERS = r"[^\W\d_]"
_WORD_BODY = rf"(?:{_LETTERS}{{1,2}}['’](?={_LETTERS}{{2}}))?{_LETTERS}+(?:-{_LETTERS}+)*(?![^\W_]|['’]?\d)"
_WORD = re.compile(rf"(?<![\w'’-]){_WORD_BODY}")
# In an ASCII text only the words that start with a capital can be names: the scan skips the rest.
_ASCII_CAPITAL_WORD = re.compile(rf"(?<![\w'’-])(?=[A-Z]){_WORD_BODY}")
# Inner capitals of names ("McDonald", "MacLeod", "DeAngelo", "LeBlanc", "FitzGerald"); any other
# inner capital makes a product or a code ("MedBot", "HbA1c").
_INNER_CAPITAL_PREFIX = re.compile(r"(?:Ma?c|De|Di|Da|Du|Le|La|Van|Von|Fitz|St)[^\W\d_]")
# Particles inside names ("Maria da Silva", "Cara Mac Ceannabháin", "Rowan Ó Flaithimhín").
_PARTICLES = (
    "van von de der den da das dos do del della di du la le bin ibn al el ter ten "
    "Van Von De Der Den Da Dos Del Della Di Du La Le Bin Ibn Al El Abu Mac Mc Ó Ní Nic Ua Uí"
).split()
_PARTICLE = "(?:" + "|".join(sorted(_PARTICLES, key=len, reverse=True)) + ")"
_PARTICLE_WORDS = frozenset(_PARTICLES)
# Between two words of a run: one space, or particles between spaces.
_GAP = re.compile(rf" (?:{_PARTICLE} ){{0,2}}")
# Particles or initials written before a name's first word ("Ms da Mota-Alves", "K. Németh").
_LEAD = re.compile(rf"(?<![\w'’.-])(?:(?:{_PARTICLE} ){{1,2}}|(?:[A-Z]\. ?){{1,3}})\Z")
_NUMBERED = re.compile(r" (?:\d|[IVX]+[a-c]?\b)")
# British combination products: "Co-amoxiclav", "Co-codamol".
_COMBINATION = re.compile(r"Co-[a-z]")
_PERSON_AFTER = re.compile(
    r"(?:['’]s\b| (?:was|is|has|had|says|said|reports|reported|attended|presented|died|lives|lived|denies|feels"
    r"|takes|took|needs|wants|agreed|declined)\b)"
)
_ROUTE = re.compile(r"\b(?:IV|PO|IM|SC|SL|PR|NG|oral|topical|inhaled|nebulised|nebulized|intravenous|subcutaneous) \Z")
# A species epithet after a genus (binomial names): a lower-case Latin word.
_SPECIES = re.compile(r" [a-z]+(?:us|i|ae|is|a|um|ii|ensis|ans|ens|es|ica|ella)\b")
# Words after which a lone capitalised word is a person: "spoke to", "asked", "seen by".
_PERSON_BEFORE = re.compile(
    r"(?i:\b(?:to|with|for|from|by|asked|told|called|phoned|rang|saw|met|visited|informed|reassured|thanked"
    r"|reminded|examined|ask|tell|call|remind|give|gave) )\Z"
)
# "Hart, Jane:" at the start of a line or sentence: a surname before a given name found.
_SURNAME_FIRST = re.compile(r"(?<![\w'’-])(\w[\w'’-]*), \Z")
# Where the capital of the next word says nothing: the start of the text, a sentence or a line.
_SENTENCE_START = re.compile(r"(?:\A|[.!?:;]|\n)[\s\-*•\"'(]*\Z")

# Clinical nouns that turn the capitalised run before them into a term or a place.
_TAIL = re.compile(
    r"(?P<possessive>['’]s?)?\s+(?:disease|syndrome|syndromes|sign|signs|score|scores|scale|test|tests|criteria|classification"
    r"|procedure|operation|repair|fracture|fractures|cyst|palsy|phenomenon|lymphoma|sarcoma|tumou?r|ulcer|angina"
    r"|virus|encephalopathy|cardiomyopathy|thyroiditis|contracture|splint|catheter|line|tube|mask|airway|monitor"
    r"|bag|sucker|needle|forceps|retractor|manoeuvre|maneuver|reflex|triad|law|rule|index|formula|equation|position"
    r"|nodes?|nodules?|duct|gland|space|pouch|canal|cells?|bod(?:y|ies)|method|stain|staining|grade|grading|stage"
    r"|staging|class|questionnaire|inventory|bacill(?:us|i)|murmur|respiration|breathing|block|incision|anastomosis"
    r"|technique|o?esophagus|dementia|chorea|ataxia|dystrophy|anomaly|aneurysm|lesions?|spots?|rings?|point|area"
    r"|fossa|layer|membrane|ligament|tendon|capsule|loop|plexus|ampulla|sphincter|diverticulum|hernia|patch(?:es)?"
    r"|crystals?|infection|fever|coma|infirmary|ward|wing|unit|suite|clinic|centre|center|building|house|hospital|theatre"
    r"|practice|lodge|floor|bay|pathway|protocol|guidelines?|regimen|department|service|team|trust|board|foundation"
    r"|college|university|school|society|association|institute|system|scheme|programme|program|card|nomogram"
    # formulations: a word before one is a medicine ("Efudix cream")
    r"|cream|ointment|gel|lotion|drops|tablets?|capsules?|inhaler|injection|infusion|spray|suppositor(?:y|ies)"
    r"|syrup|suspension|nebules?|pessar(?:y|ies))\b",
    re.IGNORECASE,
)
# Peoples, languages and faiths: never names, and the word before one describes a person, not names
# one ("Black African", "White British").
_PEOPLES = frozenset(
    """
    English British Scottish Welsh Irish American Canadian Australian European African Asian Caucasian Hispanic
    Latino Latina Arab Arabic Chinese Japanese Korean Indian Pakistani Bangladeshi Caribbean Polish Romanian
    Portuguese Spanish French German Italian Turkish Greek Russian Ukrainian Somali Nigerian Ghanaian Jewish
    Muslim Hindu Jehovah Sikh Buddhist Catholic Urdu Hindi Punjabi Bengali Gujarati Tamil Mandarin Cantonese
    Swahili Yoruba Igbo Zulu Xhosa Farsi Persian Kurdish Vietnamese Tagalog Filipino Nepali Sinhala Amharic
    Tigrinya Pashto Dari African-Caribbean Afro-Caribbean
    """.split()
)
# Words whose capital never makes them a name (none of them is a person's name on its own).
_NEVER = _PEOPLES | frozenset(
    """
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
    August September October November December Mr Mrs Ms Miss Mx Dr Prof Sir Dame St Christmas Easter Ramadan
    """.split()
)
# Endings of clinical words that no list may know: the recommended INN stems that end a drug's name
# (WHO's stem book: "Ramipril", "Atorvastatin"), then Greek and Latin endings of medical terms and
# bacterial genera ("Anticoagulation", "Helicobacter", "Clostridioides").
_CLINICAL_ENDING = re.compile(
    r"(?:pril|sartan|olol|alol|statin|mab|tinib|ciclib|conazole|azole|mycin|micin|cillin|oxacin|parin|dipine"
    r"|glinide|gliptin|gliflozin|glitazone|lukast|terol|olone|semide|thiazide|prazole|tidine|navir|buvir|ciclovir"
    r"|afil|triptan|setron|zepam|zolam|azepine|barbital|caine|dronate|fibrate|formin|gatran|xaban|profen|fenac"
    r"|coxib|oxetine|triptyline|pramine|peridol|apine|idone|tropium|curium|dopa|glutide|relin|cycline|penem"
    r"|bactam|citabine|trexate|rubicin|platin|taxel|olimus|sporin|codone|morphone|fentanil|gestrel|renone|plase|dronic"
    r"|tion|itis|itus|osis|a?emia|ectomy|otomy|ostomy|ology|opathy|plasty|oscopy|ography|algia|uria|bacter|coccus"
    r"|cocci|bacterium|monas|oides|plasma|mycosis)$"
)


@dataclass(frozen=True)
class Lexicon:
    """The words name detection weighs capitalised words by (all held lower-case but ``capitalised``)."""

    common: frozenset[str]  # ordinary English words
    rare: frozenset[str]  # rarer and technical English words
    capitalised: frozenset[str]  # proper names and other capitalised words, as written
    eponyms: frozenset[str]  # surnames in clinical terms, as written
    countries: frozenset[str]  # words of the names of countries and large regions, as written
    clinical: frozenset[str]  # never a name on their own: the drug table's names, other medicines, clinical shorthand


def _lines(name: str) -> frozenset[str]:
    path = LEXICON_DIR / name
    if name.endswith(".gz"):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    else:
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    return frozenset(text.split())


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The shipped lexicon, read once per process (``SafetyChecker`` reads it when it is built, so
    that no answer waits for it)."""
    return Lexicon(
        common=_lines("common.txt.gz"),
        rare=_lines("rare.txt.gz"),
        capitalised=_lines("capitalised.txt.gz"),
        eponyms=_lines("eponyms.txt"),
        countries=_lines("countries.txt"),
        clinical=frozenset(
            name.lower() for name in [*load_drug_table().names(), *_lines("medicines.txt"), *_lines("clinical.txt")]
        ),
    )


# How a capitalised word weighs.
_NO, _JOINS, _STARTS = 0, 1, 2


def _weigh_part(part: str, lex: Lexicon, opens_sentence: bool) -> int:
    lower = part.lower()
    if part in _NEVER or len(part) < 2 or not part[0].isupper():
        return _NO  # a lower-case part ("Post-op") says nothing
    if part in lex.countries or lower in lex.clinical:
        return _JOINS  # "Thailand", "Lasix", "Hx"; but "Alvin Marshall", "Mateo Israel Collado"
    if lower in lex.common:
        # An ordinary word with a capital mid-sentence is used as a name ("to Jade Ellis").
        return _JOINS if part in lex.capitalised or not opens_sentence else _NO
    if part in lex.eponyms:
        return _JOINS
    if len(part) >= 7 and _CLINICAL_ENDING.search(lower):
        return _NO
    if part in lex.capitalised:
        return _STARTS
    if lower in lex.rare:
        return _JOINS
    return _STARTS  # a word no list knows


def _weigh(word: str, lex: Lexicon, opens_sentence: bool) -> int:
    """The weight of a capitalised word; a hyphenated one weighs as its heaviest part."""
    if word in _NEVER or _COMBINATION.match(word):
        return _NO
    if word.lower() in lex.clinical:
        return _JOINS  # a medicine or shorthand never starts a name, but "Yasmin Almeida" is one
    if _caseless(word):
        return _STARTS
    parts = [p for p in re.split(r"[-'’]", word) if p]
    return max(_weigh_part(p, lex, opens_sentence and i == 0) for i, p in enumerate(parts))


def _caseless(word: str) -> bool:
    """A word in a script whose names are not capitalised: one without capitals (Arabic, Hebrew,
    Devanagari, Chinese, Japanese, Thai) or, like Georgian, written without them."""
    return not any(ch.isupper() or ord(ch) < 0x590 or 0x1E00 <= ord(ch) < 0x2000 for ch in word)


def _capitalised(word: str) -> bool:
    """A word written as a name: a capital first letter, not an acronym ("NSAIDs", "ST-elevation"),
    no contraction ("I've"), and inner capitals only after a name's prefix ("McDonald")."""
    if not word[0].isupper() or word[1:2].isupper() or word.isupper():
        return False
    for apostrophe in re.finditer(r"['’]", word):
        if not word[apostrophe.end() : apostrophe.end() + 1].isupper():
            return False  # "I've"; an elided prefix is followed by a capital ("O'Connor")
    for part in re.split(r"[-'’]", word):
        inner = [i for i, ch in enumerate(part) if i and ch.isupper()]
        if inner and (len(inner) > 1 or not _INNER_CAPITAL_PREFIX.fullmatch(part[: inner[0] + 1])):
            return False
    return True


def _known_proper(word: str, lex: Lexicon) -> bool:
    """A known proper name that is not an eponym or a country; a hyphenated word when each part is one."""
    parts = [p for p in re.split(r"[-'’]", word) if p]
    return all(p in lex.capitalised and p.lower() not in lex.clinical for p in parts) and not all(
        p in lex.eponyms or p in lex.countries for p in parts
    )


def find_names(text: str) -> list[tuple[int, int]]:
    """The spans of people's names in ``text`` found without a cue, in order.

    Args:
        text: clinical free text, usually already passed through the cued redaction rules.

    Returns:
        ``(start, end)`` of each name, not overlapping; a possessive "'s" is outside the span.
    """
    lex = lexicon()
    if text.isascii():
        words = [m for m in _ASCII_CAPITAL_WORD.finditer(text) if m.group() not in _PARTICLE_WORDS and _capitalised(m.group())]
    else:
        words = _candidate_words(text)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        run = [words[i]]
        while i + len(run) < len(words) and _GAP.fullmatch(text, run[-1].end(), words[i + len(run)].start()):
            run.append(words[i + len(run)])
        i += len(run)
        spans.extend(_names_in_run(text, run, lex))
    return [_with_surname_first(text, _with_leading_particles(text, span), lex) for span in spans]


def _candidate_words(text: str) -> list[re.Match[str]]:
    """The capitalised words of ``text``, and in English text the words of scripts without capitals."""
    words = list(_WORD.finditer(text))
    caseless = [m for m in words if _caseless(m.group())]
    # In English text, a word of a script without capitals is a name written in its own script;
    # a text mostly in such a script is another language, which this detector does not read.
    foreign = 5 * sum(len(m.group()) for m in caseless) > 4 * sum(len(m.group()) for m in words)
    keep = set() if foreign else {m.start() for m in caseless}
    return [m for m in words if m.group() not in _PARTICLE_WORDS and (m.start() in keep or _capitalised(m.group()))]


def _ending_at(pattern: re.Pattern[str], text: str, end: int, width: int = 30) -> re.Match[str] | None:
    """``pattern`` (anchored with ``\\Z``) matched just before ``end``, searching only the last
    ``width`` characters, so that each look back costs the same however long the text is."""
    return pattern.search(text, max(0, end - width), end)


def _with_leading_particles(text: str, span: tuple[int, int]) -> tuple[int, int]:
    lead = _ending_at(_LEAD, text, span[0])
    return (lead.start(), span[1]) if lead else span


def _with_surname_first(text: str, span: tuple[int, int], lex: Lexicon) -> tuple[int, int]:
    """The span widened over "Surname, " when a sentence starts with it before the given name."""
    before = _ending_at(_SURNAME_FIRST, text, span[0], 60)
    if before and _ending_at(_SENTENCE_START, text, before.start()) and _known_proper(before.group(1), lex):
        return before.start(), span[1]
    return span


def _names_in_run(text: str, run: list[re.Match[str]], lex: Lexicon) -> list[tuple[int, int]]:
    """The names in a run of neighbouring capitalised words: its pieces between words that are no name."""
    out: list[tuple[int, int]] = []
    piece: list[tuple[re.Match[str], int]] = []
    for k, m in enumerate([*run, None]):
        weight = _NO if m is None else _weigh(m.group(), lex, k == 0 and bool(_ending_at(_SENTENCE_START, text, m.start())))
        if weight != _NO:
            piece.append((m, weight))
            continue
        if piece and _is_name(text, piece, lex):
            out.append((piece[0][0].start(), piece[-1][0].end()))
        piece = []
    return out


def _is_name(text: str, piece: list[tuple[re.Match[str], int]], lex: Lexicon) -> bool:
    """Whether a piece of a run (words that may be a name) is a person's name."""
    first, last = piece[0][0], piece[-1][0]
    tail = _TAIL.match(text, last.end())
    if tail and (len(piece) == 1 or not tail.group("possessive")):
        return False  # "Parkinson's disease", "Los Angeles grade"; but "Emily Chen's ward" is a person's
    if any(_TAIL.fullmatch(" " + m.group()) for m, _ in piece[1:]):
        return False  # "Nightingale Ward", "Morse Fall Scale", "Rapid Access Chest Pain Clinic"
    if len(piece) == 1 and _NUMBERED.match(text, first.end()):
        return False  # "Ward 7B", "Bed 12", "Forrest IIa"
    if len(piece) == 1 and _ending_at(_ROUTE, text, first.start()):
        return False  # a medicine after its route: "IV Artesunate"
    if len(piece) == 1 and _SPECIES.match(text, last.end()):
        return False  # a genus before its species: "Staphylococcus aureus", "Escherichia coli"
    after = _WORD.match(text, last.end() + 1)
    if len(piece) == 1 and after and after.group() in _PEOPLES:
        return False  # "Black African"
    if any(weight == _STARTS for _, weight in piece):
        return True
    proper = [m.group() for m, _ in piece if _known_proper(m.group(), lex)]
    if len(proper) < len(piece):
        return False
    if len(piece) >= 2 and any(p.lower() not in lex.common for p in proper):
        return True  # "Cheryl Edwards" where both are known
    # Known names that are also ordinary words ("Rose Baker", "John"), but Title Case phrases
    # ("Colon Cancer", "Red Book") are too: only where a person is spoken to or of.
    if len(piece) == 1 and _ending_at(_SENTENCE_START, text, first.start()):
        return False  # "He was", "Protection needs": a capital that says nothing
    return bool(_ending_at(_PERSON_BEFORE, text, first.start()) or _PERSON_AFTER.match(text, last.end()))
