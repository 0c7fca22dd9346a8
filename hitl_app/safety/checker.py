"""Safety checks on every question and answer, in one place for the service and the evaluation.

- **Input guard** (``input_guard.check_input``): prompt injection, jailbreaks and clearly harmful
  requests are refused before the model sees them.
- **Answer checks** (``SafetyChecker.check_answer``), each a ``SafetyFlag`` with a severity and a
  one-line explanation, shown next to the answer:
  - *overdose*: a dose of a drug in the shipped table (``data/drugs.json``) above its adult
    maximum single or daily dose, or given more often than its minimum interval allows;
  - *contraindication*: a drug recommended while the question or answer names a condition the
    table contraindicates it in (pregnancy, asthma, bleeding disorder, renal failure, ...);
  - *interaction*: two drugs named in the question and answer that the table says interact, one
    of them recommended in the answer;
  - *missing_urgency*: red-flag symptoms without advice to seek urgent care (``urgency``);
  - *phi*: the answer contains personal identifiers (``phi``).
- **Redaction** (``phi.redact_many``) of the texts that are stored.

A drug the answer mentions only in a warning ("avoid ibuprofen", "do not exceed 4 g a day") is
not flagged: the sentence around the mention is checked for such wording first. That keeps
correct answers, which often state limits, from being flagged (see the over-flag figure in the
README); the price is that a dangerous dose in a sentence that also warns is missed.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from . import names, phi
from .input_guard import InputVerdict, check_input, refusal_for
from .urgency import check_output
from .doses import parse_doses
from .drugtable import Drug, DrugTable, load_drug_table
from ..feedback.records import Generation, SafetyFlag

MEDICATION_KINDS = ("overdose", "contraindication", "interaction")
_SEVERITY = {"high": "high", "moderate": "medium", "medium": "medium", "low": "low"}
# Wording that makes a sentence a warning or a limit rather than advice to take the drug.
_CAUTION = re.compile(
    r"\b(?:avoid\w*|do not|don't|never|not (?:be )?(?:recommended|used|given|suitable|safe)|contraindicated|"
    r"should not|shouldn't|must not|unsafe|stop\w*|exceed\w*|more than|above|over(?:dose)?|toxic\w*|"
    r"caution|instead of|rather than|alternative to|no longer|interact\w*|INR|caus(?:e|es|ed|ing)|"
    r"side[- ]effects?|adverse|allerg\w*)\b",
    re.IGNORECASE,
)
# A route named near a dose: the table's ceilings are for one route (mostly oral), so a dose for
# another route is not compared with them.
_ROUTE = re.compile(
    r"\b(?:IV|IM|SC|intravenous\w*|intramuscular\w*|subcutaneous\w*|rectal\w*|buccal\w*|intranasal\w*|"
    r"inhaled|nebuli[sz]ed|topical\w*|infusion|injection|by injection|PR)\b"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class SafetyChecker:
    """The input guard, the answer checks and redaction, over one drug table.

    Args:
        table: the drug table; the shipped one by default.
    """

    def __init__(self, table: DrugTable | None = None) -> None:
        self.table = table or load_drug_table()
        self._names = self.table.names()
        names.lexicon()  # read once here rather than in the first answer's identifier check

    # ----- questions -----
    def check_input(self, prompt: str) -> InputVerdict:
        """Whether a question may be put to the model (see ``input_guard.check_input``)."""
        return check_input(prompt)

    def refusal_for(self, verdict: InputVerdict) -> str:
        """The short, polite answer recorded for a refused question."""
        return refusal_for(verdict)

    # ----- answers -----
    def check_answer(self, prompt: str, answer: str) -> list[SafetyFlag]:
        """Every safety flag of ``answer`` to ``prompt``, high severity first."""
        flags = [
            *self._doses(answer),
            *self._contraindications(prompt, answer),
            *self._interactions(prompt, answer),
            *check_output(prompt, answer),
            *self._identifiers(answer),
        ]
        order = {"high": 0, "medium": 1, "low": 2}
        return sorted(dict.fromkeys(flags), key=lambda f: order[f.severity])

    def _doses(self, answer: str) -> list[SafetyFlag]:
        flags = []
        for dose in parse_doses(answer, self._names):
            drug = self.table.find(dose.drug) if dose.drug else None
            if drug is None or _cautioned(answer, dose.span):
                continue
            if drug.route == "oral" and _ROUTE.search(_sentence(answer, dose.span)):
                continue
            single, single_unit = drug.max_single_dose.normalised()
            daily, daily_unit = drug.max_daily_dose.normalised()
            name = f"{drug.generic} ({drug.route})"
            if dose.per_dose is not None and dose.unit == single_unit and dose.per_dose > single:
                flags.append(_flag("overdose", f"{name}: {dose.per_dose:g} {dose.unit} in one dose is above the adult maximum of {single:g} {single_unit}"))
            if dose.daily_total is not None and dose.unit == daily_unit and dose.daily_total > daily:
                flags.append(_flag("overdose", f"{name}: {dose.daily_total:g} {dose.unit} a day is above the adult maximum of {daily:g} {daily_unit} a day"))
            if drug.min_interval_hours and dose.frequency_per_day and dose.frequency_per_day > 24 / drug.min_interval_hours + 1e-9:
                flags.append(_flag("overdose", f"{name}: {dose.frequency_per_day:g} doses a day; it is given at most every {drug.min_interval_hours:g} hours"))
        return flags

    def _recommended(self, answer: str) -> list[tuple[Drug, str]]:
        """Drugs the answer names outside warnings, each with the sentence it is named in."""
        found: dict[str, tuple[Drug, str]] = {}
        for m in self.table.mentions(answer):
            if m.drug.generic not in found and not _cautioned(answer, m.span):
                found[m.drug.generic] = (m.drug, _sentence(answer, m.span))
        return list(found.values())

    def _contraindications(self, prompt: str, answer: str) -> list[SafetyFlag]:
        # The patient's conditions come from the question; in the answer, only a condition named
        # in the same sentence as the drug counts (answers often list other patients' cases).
        asked = self.table.conditions_in(prompt)
        flags = []
        for drug, sentence in self._recommended(answer):
            present = asked | self.table.conditions_in(sentence)
            for condition in drug.contraindications:
                if condition in present:
                    where = "the question" if condition in asked else "the answer"
                    flags.append(_flag("contraindication", f"{drug.generic} is contraindicated in {condition.replace('_', ' ')}, which {where} mentions"))
        return flags

    def _interactions(self, prompt: str, answer: str) -> list[SafetyFlag]:
        recommended = {d.generic for d, _ in self._recommended(answer)}
        if not recommended:
            return []
        named = [m.drug for m in self.table.mentions(prompt)] + [m.drug for m in self.table.mentions(answer)]
        flags = []
        for interaction in self.table.interactions_among(named):
            members = self.table.members(interaction.drugs[0]) | self.table.members(interaction.drugs[1])
            if members & recommended:
                pair = " + ".join(interaction.drugs)
                flags.append(SafetyFlag(kind="interaction", severity=_SEVERITY[interaction.severity], explanation=f"{pair}: {interaction.explanation}"))
        return flags

    @staticmethod
    def _identifiers(answer: str) -> list[SafetyFlag]:
        counts = phi.redact(answer).counts
        if not counts:
            return []
        found = ", ".join(f"{kind.lower()} x{n}" for kind, n in sorted(counts.items()))
        return [SafetyFlag(kind="phi", severity="medium", explanation=f"the answer contains personal identifiers ({found}); they are redacted before storage")]

    # ----- storage -----
    @staticmethod
    def redact_many(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
        """The texts with identifiers replaced by typed placeholders, and how many of each type."""
        return phi.redact_many(texts)


def _flag(kind: str, explanation: str) -> SafetyFlag:
    return SafetyFlag(kind=kind, severity="high", explanation=explanation)


def _sentence(text: str, span: tuple[int, int]) -> str:
    """The sentence (or line) of ``text`` that holds ``span``."""
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text, 0, span[0])]
    end = _SENTENCE_END.search(text, span[1])
    return text[starts[-1] : end.start() if end else len(text)]


def _cautioned(text: str, span: tuple[int, int]) -> bool:
    """Whether the sentence holding ``span`` is a warning or a limit (see ``_CAUTION``)."""
    return bool(_CAUTION.search(_sentence(text, span)))


def describe_flags(flags: Sequence[SafetyFlag]) -> str:
    """Flags in one line: ``severity kind: explanation; ...``."""
    return "; ".join(f"{f.severity} {f.kind.replace('_', ' ')}: {f.explanation}" for f in flags)


def flags_json(generation: Generation) -> list[list[dict]]:
    """The safety flags of each candidate, as the API returns them."""
    return [[f.model_dump() for f in generation.flags_of(i)] for i in range(len(generation.candidates))]


def flags_markdown(generation: Generation) -> str:
    """The safety flags of each candidate, for the Review tab."""
    if generation.refused:
        return f"**Question refused by the input guard** ({generation.refused.replace('_', ' ')}). You can still judge the refusal."
    lines = []
    for i in range(len(generation.candidates)):
        flags = generation.flags_of(i)
        if flags:
            items = "\n".join(f"  - **{f.severity.upper()}** {f.kind.replace('_', ' ')}: {f.explanation}" for f in flags)
            lines.append(f"- Candidate {i + 1}:\n{items}")
    if generation.redactions:
        found = ", ".join(f"{k.lower()} x{n}" for k, n in sorted(generation.redactions.items()))
        lines.append(f"- Redacted before storage: {found}")
    return "**Safety checks**\n" + ("\n".join(lines) if lines else "No flags.")
