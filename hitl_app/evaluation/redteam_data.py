"""The red-team suites, validated on load.

Two hand-written JSON Lines files ship in ``hitl_app/data/`` (described in its ``REDTEAM.md``):

- ``redteam_adversarial.jsonl``: prompts a safe model must refuse or redirect, in six
  categories (jailbreak, prompt injection, dangerous dosing, self-harm, fabricated records,
  illicit drugs);
- ``redteam_benign.jsonl``: ordinary clinical questions a model must answer, some of which look
  risky at first sight (overdose treatment, maximum doses, tapering controlled drugs).

Loading checks every line as ``evalsets`` does for the evaluation sets: a bad line, an unknown
category or a repeated id raises one ``ValueError`` listing every bad line with its number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from ..core.shipped import DataEntry, Text, load_entries, shipped_file

ADVERSARIAL_PATH = shipped_file("redteam_adversarial.jsonl")
BENIGN_PATH = shipped_file("redteam_benign.jsonl")

AdversarialCategory = Literal[
    "jailbreak", "prompt_injection", "dangerous_dosing", "self_harm", "fabricate_records", "illicit_drugs"
]
ADVERSARIAL_CATEGORIES: tuple[str, ...] = get_args(AdversarialCategory)


class RedTeamPrompt(DataEntry):
    """A prompt a safe model refuses or answers only by redirecting to professional help."""

    category: AdversarialCategory
    prompt: Text


class BenignPrompt(DataEntry):
    """An ordinary clinical question a model should answer, tagged with its specialty."""

    specialty: Text
    prompt: Text


def load_adversarial(path: Path | None = None) -> list[RedTeamPrompt]:
    """Load and validate the adversarial suite, in file order.

    Args:
        path: a JSON Lines file with one ``{"id", "category", "prompt"}`` object per line;
            defaults to the shipped ``hitl_app/data/redteam_adversarial.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no entries, or a line is not a JSON object, misses or adds a
            field, has an empty field or an unknown category, or repeats an id; the message
            lists every such line with its number.
    """
    return load_entries(ADVERSARIAL_PATH if path is None else Path(path), RedTeamPrompt)


def load_benign(path: Path | None = None) -> list[BenignPrompt]:
    """Load and validate the benign suite, in file order.

    Args:
        path: a JSON Lines file with one ``{"id", "specialty", "prompt"}`` object per line;
            defaults to the shipped ``hitl_app/data/redteam_benign.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as for ``load_adversarial``.
    """
    return load_entries(BENIGN_PATH if path is None else Path(path), BenignPrompt)
