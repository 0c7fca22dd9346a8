"""Registry of model versions under ``checkpoints/``.

Layout::

    checkpoints/base/            the converted base model (safetensors + tokenizer + manifest)
    checkpoints/v0001/           a LoRA adapter + manifest.json
    checkpoints/v0001/reward/    its reward model's LoRA and score head, when the round trained one
    checkpoints/ACTIVE           JSON pointer to the serving version (persists across restarts)
    checkpoints/activations.jsonl  every activation: who, when, why, and whether it was forced
    checkpoints/rounds.jsonl     every training round: start, duration, outcome
    checkpoints/.staging-*/      a version being written; never listed

Publishing writes into a staging folder and renames it into place, so a version is listed only
once it is complete: a crash mid-publish leaves an unlisted staging folder, cleaned up later.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from filelock import FileLock
from pydantic import BaseModel

from ..core.errors import NotFoundError
from ..core.files import append_line, atomic_write_text, fsync_dir
from ..feedback.records import BASE_VERSION
from .manifest import ActivePointer, Manifest, RoundRecord

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
REWARD_SUBDIR = "reward"  # a version's reward adapter, inside its folder: published in the same rename
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_STAGING_PREFIX = ".staging-"


class Registry:
    """Versions, the ACTIVE pointer, and atomic publishing.

    Args:
        root: the checkpoints folder; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_dir = self.root / BASE_VERSION
        self._active_path = self.root / "ACTIVE"
        self._activations_path = self.root / "activations.jsonl"
        self._rounds_path = self.root / "rounds.jsonl"
        self._lock = FileLock(str(self.root / ".registry.lock"))
        self._manifests: dict[str, Manifest] = {}  # published versions never change, so cache them

    # ----- listing -----
    def versions(self) -> list[str]:
        """Published adapter versions, oldest first. Only complete folders are listed."""
        found = []
        for child in self.root.iterdir():
            match = _VERSION_RE.match(child.name)
            if match and (child / MANIFEST).is_file() and (child / ADAPTER_WEIGHTS).is_file():
                found.append((int(match.group(1)), child.name))
        return [name for _, name in sorted(found)]

    def exists(self, version: str) -> bool:
        """Whether ``version`` is ``base`` or a published version."""
        return version == BASE_VERSION or version in self.versions()

    def manifest(self, version: str) -> Manifest:
        """The manifest of a published version.

        Raises:
            NotFoundError: the version is not published.
        """
        if version not in self._manifests:
            self._require(version, allow_base=False)
            path = self.root / version / MANIFEST
            self._manifests[version] = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        return self._manifests[version]

    def manifests(self) -> list[Manifest]:
        """Manifests of every published version, oldest first."""
        return [self.manifest(v) for v in self.versions()]

    def adapter_dir(self, version: str) -> Path:
        """The folder of a published adapter.

        Raises:
            NotFoundError: the version is not published.
        """
        self._require(version, allow_base=False)
        return self.root / version

    def reward_dir(self, version: str) -> Path | None:
        """The folder of a published version's reward adapter; None for the base or a version without one.

        Raises:
            NotFoundError: the version is neither the base nor published.
        """
        if version == BASE_VERSION:
            return None
        path = self.adapter_dir(version) / REWARD_SUBDIR
        return path if (path / ADAPTER_WEIGHTS).is_file() else None

    def reward_source(self, version: str) -> tuple[str, Path] | None:
        """The reward model that goes with ``version``: its own, else its nearest ancestor's (a
        round without pairs trains none); None when no version up to the base has one.

        Raises:
            NotFoundError: the version is neither the base nor published.
        """
        while version != BASE_VERSION:
            path = self.reward_dir(version)
            if path is not None:
                return version, path
            version = self.manifest(version).parent
        return None

    def consumed_cursor(self) -> int:
        """Store offset up to which some published version has trained; judgements after it are new."""
        return max((m.store_cursor for m in self.manifests()), default=0)

    # ----- the ACTIVE pointer -----
    def active(self) -> ActivePointer:
        """The persisted serving version; ``base`` when nothing was activated or it vanished."""
        try:
            pointer = ActivePointer.model_validate_json(self._active_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ActivePointer(version=BASE_VERSION, activated_by="system", reason="default")
        except ValueError as exc:
            log.error("ACTIVE pointer %s is unreadable (%s); serving base", self._active_path, exc)
            return ActivePointer(version=BASE_VERSION, activated_by="system", reason="ACTIVE unreadable")
        if not self.exists(pointer.version):
            log.error("ACTIVE names %s, which is not published; serving base", pointer.version)
            return ActivePointer(version=BASE_VERSION, activated_by="system", reason="ACTIVE version missing")
        return pointer

    def set_active(self, version: str, by: str, reason: str = "", forced: bool = False) -> ActivePointer:
        """Persist ``version`` as the serving version (atomic replace + fsync) and log the activation.

        ``forced`` records that an admin chose to serve a version the promotion gate held back.

        Raises:
            NotFoundError: the version is neither ``base`` nor published.
        """
        self._require(version, allow_base=True)
        pointer = ActivePointer(version=version, activated_by=by, reason=reason, forced=forced)
        with self._lock:
            atomic_write_text(self._active_path, pointer.model_dump_json(indent=2))
            append_line(self._activations_path, pointer.model_dump_json())
        log.info("activated %s (by %s%s%s)", version, by, ", forced" if forced else "", f": {reason}" if reason else "")
        return pointer

    def activations(self) -> list[ActivePointer]:
        """Every activation so far, oldest first; an unreadable line is skipped and logged."""
        return _read_log(self._activations_path, ActivePointer)

    # ----- the round log -----
    def record_round(self, record: RoundRecord) -> None:
        """Append a finished round to ``rounds.jsonl`` (fsynced)."""
        with self._lock:
            append_line(self._rounds_path, record.model_dump_json())

    def rounds(self) -> list[RoundRecord]:
        """Every recorded round, oldest first; an unreadable line is skipped and logged."""
        return _read_log(self._rounds_path, RoundRecord)

    # ----- publishing -----
    def staging_dir(self) -> Path:
        """A fresh, unlisted folder to write a new version into before ``publish``."""
        path = self.root / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(self, staging: Path, manifest: Manifest) -> str:
        """Write ``manifest`` into ``staging`` and rename it to the next version name.

        The manifest's ``version`` field is set to the allocated name. Returns that name.

        Raises:
            FileNotFoundError: ``staging`` holds no adapter weights.
        """
        if not (staging / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {staging}; nothing to publish")
        reward = staging / REWARD_SUBDIR
        if manifest.metrics.reward_model is not None:
            if not (reward / ADAPTER_WEIGHTS).is_file():
                raise FileNotFoundError(f"the manifest names a reward model but {reward} holds no {ADAPTER_WEIGHTS}")
            fsync_dir(reward)
        with self._lock:
            name = self._next_name()
            manifest = manifest.model_copy(update={"version": name})
            atomic_write_text(staging / MANIFEST, manifest.model_dump_json(indent=2))
            fsync_dir(staging)
            os.rename(staging, self.root / name)
            fsync_dir(self.root)
        log.info("published %s", name)
        return name

    def clean_staging(self) -> int:
        """Remove staging folders left by interrupted publishes; returns how many."""
        removed = 0
        for child in self.root.glob(f"{_STAGING_PREFIX}*"):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
        if removed:
            log.warning("removed %d unfinished version folder(s) from %s", removed, self.root)
        return removed

    def _next_name(self) -> str:
        numbers = [int(m.group(1)) for c in self.root.iterdir() if (m := _VERSION_RE.match(c.name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def _require(self, version: str, allow_base: bool) -> None:
        if allow_base and version == BASE_VERSION:
            return
        if version not in self.versions():
            listed = ", ".join([BASE_VERSION, *self.versions()] if allow_base else self.versions()) or "none"
            raise NotFoundError(f"unknown version {version!r}; available versions: {listed}")


def _read_log(path: Path, model: type[BaseModel]) -> list:
    """The records of a JSONL log, oldest first; a missing file is empty, an unreadable line is logged."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append(model.model_validate_json(line))
        except ValueError as exc:
            log.error("%s line %d is unreadable (%s); skipped", path, number, exc)
    return found
