"""Style checks: what an admin says a taught style looks like, checked on every version's answers.

A check is a name and a pattern: a phrase that must appear (case-insensitive), or a regular
expression that must match somewhere (``re.search``, multi-line: ``^`` and ``$`` match at line
breaks). The checks live in ``checkpoints/style_checks.json``, replaced atomically. They are
checked against the sample answers every evaluated version keeps in its manifest (its greedy
answers to shipped questions, and those of the version serving before it), so a check added today
reads every version ever trained, the base included, without generating anything again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.errors import UserError
from ..core.files import atomic_write_text
from ..feedback.records import BASE_VERSION
from ..versions.manifest import Manifest

STYLE_CHECKS_FILE = "style_checks.json"
MAX_CHECKS = 20


class StyleCheck(BaseModel):
    """One style an admin wants the model to learn, as a phrase or a regular expression."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=80)
    pattern: str = Field(min_length=1, max_length=500)
    regex: bool = Field(default=False, description="True: pattern is a regular expression; False: a phrase.")

    @field_validator("name", "pattern")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    def compiled(self) -> re.Pattern[str]:
        """The pattern as a compiled regular expression.

        Raises:
            UserError: the regular expression does not compile.
        """
        if not self.regex:
            return re.compile(re.escape(self.pattern), re.IGNORECASE)
        try:
            return re.compile(self.pattern, re.MULTILINE)
        except re.error as exc:
            raise UserError(f"style check {self.name!r}: the regular expression does not compile: {exc}") from exc

    def matches(self, text: str) -> bool:
        """Whether ``text`` shows the style."""
        return self.compiled().search(text) is not None


class StyleChecks:
    """The admin's style checks, kept in one small JSON file.

    Args:
        checkpoints_dir: the folder that holds ``style_checks.json``.
    """

    def __init__(self, checkpoints_dir: Path) -> None:
        self.path = Path(checkpoints_dir) / STYLE_CHECKS_FILE
        # Two admins saving at once must not lose one another's check (read, change, write).
        self._lock = FileLock(str(self.path) + ".lock")

    def all(self) -> list[StyleCheck]:
        """Every check, in the order they were added."""
        if not self.path.is_file():
            return []
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return [StyleCheck.model_validate(entry) for entry in data.get("checks", [])]

    def put(self, check: StyleCheck) -> list[StyleCheck]:
        """Add ``check``, or replace the check of the same name; returns every check.

        Raises:
            UserError: the regular expression does not compile, or there are too many checks.
        """
        check.compiled()
        with self._locked():
            checks = [c for c in self.all() if c.name != check.name]
            if len(checks) >= MAX_CHECKS:
                raise UserError(f"there are already {MAX_CHECKS} style checks; remove one first")
            checks.append(check)
            self._write(checks)
        return checks

    def remove(self, name: str) -> list[StyleCheck]:
        """Remove the check called ``name``; returns the remaining checks.

        Raises:
            UserError: there is no such check.
        """
        with self._locked():
            checks = self.all()
            kept = [c for c in checks if c.name != name]
            if len(kept) == len(checks):
                raise UserError(f"no style check named {name!r}; there are: {', '.join(c.name for c in checks) or 'none'}")
            self._write(kept)
        return kept

    def _locked(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the lock file lives beside the checks
        return self._lock

    def _write(self, checks: list[StyleCheck]) -> None:
        atomic_write_text(self.path, json.dumps({"checks": [c.model_dump() for c in checks]}, indent=2))


def make_check(name: str, pattern: str, regex: bool = False) -> StyleCheck:
    """A validated ``StyleCheck``.

    Raises:
        UserError: a blank or over-long name or pattern, or a regular expression that does not compile.
    """
    try:
        check = StyleCheck(name=name, pattern=pattern, regex=regex)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid style check: {problems}") from exc
    check.compiled()
    return check


def adoption(manifests: Sequence[Manifest], checks: Sequence[StyleCheck]) -> list[dict]:
    """The share of each version's sample answers that show each style, base first.

    The base's answers are the serving answers kept by the first version trained on the base.
    Versions evaluated without sample answers are left out.

    Returns:
        Rows ``{"version", "style", "adoption", "answers"}``.
    """
    answers: dict[str, list[str]] = {}
    for m in manifests:
        if not m.samples:
            continue
        answers[m.version] = [s.answer for s in m.samples]
        if m.parent == BASE_VERSION and BASE_VERSION not in answers:
            answers[BASE_VERSION] = [s.serving_answer for s in m.samples]
    order = [BASE_VERSION] if BASE_VERSION in answers else []
    order += [m.version for m in manifests if m.version in answers]
    rows = []
    for check in checks:
        pattern = check.compiled()
        for version in order:
            texts = answers[version]
            hits = sum(pattern.search(t) is not None for t in texts)
            rows.append({"version": version, "style": check.name, "adoption": hits / len(texts), "answers": len(texts)})
    return rows
