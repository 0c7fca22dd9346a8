"""The drug table: adult dose ceilings, contraindications and interactions, validated on load.

The table ships as ``hitl_app/data/drugs.json``. It is for automated screening of model answers
only and must be reviewed by a pharmacist before any clinical use (the file's ``_note`` says so).

``load_drug_table()`` checks every field against the pydantic models below and then checks that
the parts refer to each other correctly: every contraindication is a known condition, every class
member and interaction partner a known drug (or class), every source a known source, no name is
shared by two drugs, and no single-dose ceiling is above its daily ceiling. Problems are reported
together in one ``DrugTableError`` that names each drug and field, so a hand edit that breaks the
file is caught when it is loaded. (Field errors come first: the cross-reference check runs once
every field is valid, so fixing a bad field can reveal a further, cross-reference problem.)

Lookups are case-insensitive: ``find`` by generic name, alias or brand; ``mentions`` finds those
names in free text; ``conditions_in`` finds condition phrases; ``interactions_among`` returns the
interactions between a set of drugs, expanding classes such as "nsaids".
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails

from ..core.shipped import shipped_file
from .doses import CanonicalUnit, normalise_amount

log = logging.getLogger(__name__)

DRUG_TABLE_PATH = shipped_file("drugs.json")

# Surrounding whitespace is stripped before the length check, so "  " is rejected as empty.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Unit = Literal["mg", "g", "mcg", "units", "mL"]
Route = Literal[
    "oral", "sublingual", "subcutaneous", "intramuscular", "intravenous", "inhaled", "rectal", "topical", "transdermal"
]
Severity = Literal["high", "moderate"]


class DrugTableError(ValueError):
    """The drug table file is missing, not JSON, or has invalid or inconsistent entries."""


class Amount(BaseModel):
    """A dose ceiling as written in the table, e.g. ``{"value": 4, "unit": "g"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float = Field(gt=0)
    unit: Unit

    def normalised(self) -> tuple[float, CanonicalUnit]:
        """The amount in mg (masses), units or mL, as ``doses.parse_doses`` reports doses."""
        return normalise_amount(self.value, self.unit)


class Drug(BaseModel):
    """One drug: its names, adult ceilings for one route, contraindications and sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generic: Text  # the table's key: lower case, one spelling (others go in aliases)
    aliases: tuple[Text, ...] = ()  # other generic spellings: "acetaminophen", "albuterol"
    brands: tuple[Text, ...] = ()
    category: Text  # a readable group, e.g. "NSAID analgesic"
    route: Route = "oral"  # the route the ceilings apply to
    max_single_dose: Amount
    max_daily_dose: Amount
    min_interval_hours: float | None = Field(default=None, gt=0)  # 168 = once weekly (methotrexate)
    contraindications: tuple[Text, ...] = ()  # keys of DrugTable.conditions
    sources: tuple[Text, ...] = Field(min_length=1)  # keys of DrugTable.sources
    note: Text | None = None  # caveats a reviewer should see with any flag

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the drug is known by: generic, aliases, then brands."""
        return (self.generic, *self.aliases, *self.brands)


class Interaction(BaseModel):
    """A pair of drugs or classes that should not be combined without review."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drugs: tuple[Text, Text]  # generic names or class keys
    severity: Severity
    explanation: Text
    sources: tuple[Text, ...] = ()


class DrugMention(NamedTuple):
    """A drug named in text and the ``(start, end)`` offsets of the name."""

    drug: Drug
    span: tuple[int, int]


class DrugTable(BaseModel):
    """The whole table; see the module docstring for the checks made on load."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    note: Text = Field(alias="_note")  # the screening-only disclaimer
    sources: dict[str, Text]  # source name -> what it is
    conditions: dict[str, tuple[Text, ...]]  # condition key -> lower-case phrases that indicate it
    classes: dict[str, tuple[Text, ...]] = {}  # class key -> generic names
    drugs: tuple[Drug, ...] = Field(min_length=1)
    interactions: tuple[Interaction, ...] = ()

    @model_validator(mode="after")
    def _check_references(self) -> DrugTable:
        problems = _cross_reference_problems(self)
        if problems:
            raise ValueError("\n".join(problems))  # split back into lines by _load
        return self

    # --- lookups ---------------------------------------------------------------------------------

    def find(self, name: str) -> Drug | None:
        """The drug with this generic name, alias or brand (any case), or None."""
        return self._by_name.get(_key(name))

    def names(self) -> tuple[str, ...]:
        """Every generic name, alias and brand in the table, e.g. for ``parse_doses(drug_names=)``."""
        return tuple(name for drug in self.drugs for name in drug.names)

    def members(self, key: str) -> frozenset[str]:
        """Generic names a class key or drug name stands for ("nsaids" -> ibuprofen, ...).

        Raises:
            KeyError: ``key`` is neither a class nor a drug in the table.
        """
        if key in self.classes:
            return frozenset(self.classes[key])
        drug = self.find(key)
        if drug is None:
            raise KeyError(f"{key!r} is neither a drug nor a class in the drug table")
        return frozenset({drug.generic})

    def mentions(self, text: str) -> list[DrugMention]:
        """Drugs named in ``text`` (generic, alias or brand; whole words, any case), in order."""
        found: list[DrugMention] = []
        for match in self._name_pattern.finditer(text):
            drug = self.find(match.group())
            if drug is not None:
                found.append(DrugMention(drug, (match.start(), match.end())))
        return found

    def conditions_in(self, text: str) -> set[str]:
        """Condition keys whose phrases occur in ``text`` ("20 weeks pregnant" -> {"pregnancy"}).

        Matching is on whole words and ignores case; it does not understand negation, so "not
        pregnant" still reports pregnancy (a screening tool should over-report, not miss).
        """
        text = text.replace("\u2019", "'")  # curly apostrophes: "Parkinson’s"
        return {key for key, pattern in self._condition_patterns.items() if pattern.search(text)}

    def interactions_among(self, drugs: Iterable[Drug | str]) -> list[Interaction]:
        """Table interactions between two different drugs of ``drugs``, in table order.

        Args:
            drugs: drugs or names (generic, alias, brand); unknown names are ignored.
        """
        present: set[str] = set()
        for item in drugs:
            drug = item if isinstance(item, Drug) else self.find(item)
            if drug is None:
                log.debug("ignoring unknown drug %r when looking for interactions", item)
                continue
            present.add(drug.generic)
        found: list[Interaction] = []
        for interaction in self.interactions:
            left = self.members(interaction.drugs[0]) & present
            right = self.members(interaction.drugs[1]) & present
            if any(a != b for a in left for b in right):
                found.append(interaction)
        return found

    # --- indices, built once per table -------------------------------------------------------------

    @cached_property
    def _by_name(self) -> dict[str, Drug]:
        return {_key(name): drug for drug in self.drugs for name in drug.names}

    @cached_property
    def _name_pattern(self) -> re.Pattern[str]:
        # Longest names first so "isosorbide mononitrate" is not cut short by a shorter name.
        names = sorted(self._by_name, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, name.split())) for name in names)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @cached_property
    def _condition_patterns(self) -> dict[str, re.Pattern[str]]:
        # A hyphen counts as part of a word here, so "non-pregnant" and "child-bearing" do not
        # match "pregnant" and "child".
        patterns: dict[str, re.Pattern[str]] = {}
        for key, phrases in self.conditions.items():
            alternatives = "|".join(
                r"\s+".join(map(re.escape, phrase.split())) for phrase in sorted(phrases, key=len, reverse=True)
            )
            patterns[key] = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)
        return patterns


def load_drug_table(path: Path | str | None = None) -> DrugTable:
    """Load and validate a drug table; the shipped one is loaded once and cached.

    Args:
        path: a JSON file in the shape of ``hitl_app/data/drugs.json``; defaults to that file.

    Raises:
        DrugTableError: the file is missing or not JSON, or any entry is invalid or refers to an
            unknown drug, class, condition or source; the message names each drug and field.
    """
    if path is None:
        return _shipped_table()
    return _load(Path(path))


@lru_cache(maxsize=1)
def _shipped_table() -> DrugTable:
    return _load(DRUG_TABLE_PATH)


def _load(path: Path) -> DrugTable:
    """Read ``path`` and validate it, turning every problem into one DrugTableError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DrugTableError(f"{path}: drug table not found") from exc
    except json.JSONDecodeError as exc:
        raise DrugTableError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    try:
        table = DrugTable.model_validate(raw)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            if error["loc"]:
                problems.append(_describe(error, raw))
            else:  # the cross-reference check: one line per problem
                problems.extend(str(error["msg"]).removeprefix("Value error, ").splitlines())
        listing = "\n  ".join(problems)
        raise DrugTableError(f"{path}: {len(problems)} problem(s); fix them and reload:\n  {listing}") from exc
    log.info("loaded drug table %s: %d drugs, %d interactions", path, len(table.drugs), len(table.interactions))
    return table


def _key(name: str) -> str:
    """Lookup key for a name: lower case, single spaces."""
    return " ".join(name.lower().split())


def _describe(error: ErrorDetails, raw: Any) -> str:
    """One pydantic error as "drug 'ibuprofen', field max_daily_dose.unit: <message>"."""
    loc = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] in ("drugs", "interactions") and isinstance(loc[1], int):
        entries = raw.get(loc[0]) if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        if loc[0] == "drugs":
            name = entry.get("generic") if isinstance(entry, dict) else None
            where = f"drug {name!r}" if name else f"drug #{loc[1] + 1}"
        else:
            pair = entry.get("drugs") if isinstance(entry, dict) else None
            where = f"interaction {pair!r}" if pair else f"interaction #{loc[1] + 1}"
        field = ".".join(map(str, loc[2:])) or "entry"
        return f"{where}, field {field}: {message}"
    return f"{'.'.join(map(str, loc)) or 'table'}: {message}"


def _cross_reference_problems(table: DrugTable) -> list[str]:
    """Every inconsistency between the table's parts, each naming the drug and field."""
    problems: list[str] = []
    generics = {drug.generic for drug in table.drugs}
    owner: dict[str, str] = {}
    for drug in table.drugs:
        where = f"drug {drug.generic!r}"
        if drug.generic != drug.generic.lower():
            problems.append(f"{where}, field generic: must be lower case")
        for name in drug.names:
            previous = owner.setdefault(_key(name), drug.generic)
            if previous != drug.generic:
                problems.append(f"{where}: name {name!r} is already used by drug {previous!r}")
        for condition in drug.contraindications:
            if condition not in table.conditions:
                problems.append(f"{where}, field contraindications: unknown condition {condition!r}")
        for source in drug.sources:
            if source not in table.sources:
                problems.append(f"{where}, field sources: unknown source {source!r}")
        single, single_unit = drug.max_single_dose.normalised()
        daily, daily_unit = drug.max_daily_dose.normalised()
        if single_unit != daily_unit:
            problems.append(
                f"{where}, field max_daily_dose: unit {daily_unit} does not match max_single_dose unit {single_unit}"
            )
        elif single > daily:
            problems.append(
                f"{where}, field max_single_dose: {single} {single_unit} is above max_daily_dose {daily} {daily_unit}"
            )
    for key, phrases in table.conditions.items():
        for phrase in phrases:
            if phrase != phrase.lower():
                problems.append(f"condition {key!r}: phrase {phrase!r} must be lower case")
    for key, members in table.classes.items():
        if _key(key) in owner:
            problems.append(f"class {key!r}: the key is also a drug name")
        for member in members:
            if member not in generics:
                problems.append(f"class {key!r}: unknown drug {member!r} (use the generic name)")
    for interaction in table.interactions:
        where = f"interaction {list(interaction.drugs)!r}"
        for side in interaction.drugs:
            if side not in generics and side not in table.classes:
                problems.append(f"{where}, field drugs: {side!r} is neither a generic name nor a class")
        if interaction.drugs[0] == interaction.drugs[1]:
            problems.append(f"{where}, field drugs: names the same drug twice")
        for source in interaction.sources:
            if source not in table.sources:
                problems.append(f"{where}, field sources: unknown source {source!r}")
    return problems
