"""The rubric: optional structured ratings of an answer on a few axes (``--rubric on``).

The axes and their levels live in one data file (``hitl_app/data/rubric.json``), so a department
can change them without touching code. Each axis lists its levels best first; a rating is
``{axis name: level name}`` and may leave axes out. Ratings are stored with the judgement, counted
per version in the Dashboard, and turned into KTO labels: an answer rated at the best level on
every axis it was rated on is desirable, one rated at the worst level on any axis undesirable.
Ratings that the file names ``harmful`` (for example harm "likely" or "severe") make accepting
the answer need an override reason, as a high-severity safety flag does.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core.errors import UserError
from ..core.shipped import shipped_file

RUBRIC_PATH = shipped_file("rubric.json")


class Axis(BaseModel):
    """One axis: its name, the question a clinician answers, and its levels, best first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    question: str = Field(min_length=1)
    levels: list[str] = Field(min_length=2)


class Rubric(BaseModel):
    """The axes, and which levels count as harmful."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    axes: list[Axis] = Field(min_length=1)
    harmful: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Rubric":
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError("axis names must be unique")
        for axis in self.axes:
            if len(set(axis.levels)) != len(axis.levels):
                raise ValueError(f"axis {axis.name!r} repeats a level")
        for name, levels in self.harmful.items():
            axis = self.axis(name)
            unknown = [level for level in levels if level not in axis.levels]
            if unknown:
                raise ValueError(f"harmful levels {unknown} are not levels of axis {name!r}")
        return self

    def axis(self, name: str) -> Axis:
        """The axis called ``name``.

        Raises:
            UserError: no such axis.
        """
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise UserError(f"unknown rubric axis {name!r}; the axes are {', '.join(a.name for a in self.axes)}")

    def check(self, ratings: dict) -> dict[str, str] | None:
        """Validated ratings (empty ones dropped), or None when nothing was rated.

        Raises:
            UserError: not a mapping, an unknown axis, or a level the axis does not have.
        """
        if ratings is None:
            return None
        if not isinstance(ratings, dict):
            raise UserError(f"rubric ratings must map axis names to levels, not {type(ratings).__name__}")
        out = {}
        for name, level in ratings.items():
            if level in (None, ""):
                continue
            axis = self.axis(str(name))
            if level not in axis.levels:
                raise UserError(f"{level!r} is not a level of rubric axis {axis.name!r}; use one of {', '.join(axis.levels)}")
            out[axis.name] = level
        return out or None

    def harmful_ratings(self, ratings: dict[str, str] | None) -> list[str]:
        """The ratings that make accepting an answer need an override reason, as ``axis: level``."""
        return [f"{a}: {lvl}" for a, lvl in (ratings or {}).items() if lvl in self.harmful.get(a, [])]

    def kto_label(self, ratings: dict[str, str] | None) -> bool | None:
        """Desirable (best level on every rated axis), undesirable (worst level on any), or None."""
        if not ratings:
            return None
        positions = {a: self.axis(a).levels.index(lvl) for a, lvl in ratings.items()}
        if any(p == len(self.axis(a).levels) - 1 for a, p in positions.items()):
            return False
        if all(p == 0 for p in positions.values()):
            return True
        return None


def load_rubric(path: Path | None = None) -> Rubric:
    """Read and validate the rubric file (the shipped one by default).

    Raises:
        UserError: the file cannot be read, is not JSON, or does not describe a valid rubric.
    """
    path = Path(path or RUBRIC_PATH)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"the rubric file {path} cannot be read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"the rubric file {path} is not valid JSON: {exc}") from None
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rubric'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"the rubric file {path} is invalid: {problems}") from None


def rating_counts(rated: list[tuple[str, dict[str, str]]], rubric: Rubric) -> dict[str, dict[str, dict[str, int]]]:
    """Counts of each level on each axis per version: ``{version: {axis: {level: n}}}``.

    Args:
        rated: (version of the rated answer, ratings) for every rated judgement.
        rubric: gives every axis and level, so absent levels show as 0.
    """
    out: dict[str, dict[str, dict[str, int]]] = {}
    for version, ratings in rated:
        table = out.setdefault(version, {a.name: {lvl: 0 for lvl in a.levels} for a in rubric.axes})
        for axis, level in ratings.items():
            if axis in table and level in table[axis]:
                table[axis][level] += 1
    return out


@lru_cache(maxsize=1)
def _shipped() -> Rubric:
    return load_rubric()


def stored_kto_label(ratings: dict[str, str] | None) -> bool | None:
    """The KTO label of stored ratings under the rubric file (None: no label, or ratings on axes
    or levels the file no longer has, which teach nothing rather than fail a round)."""
    if not ratings:
        return None
    try:
        return _shipped().kto_label(ratings)
    except (UserError, ValueError):
        return None
