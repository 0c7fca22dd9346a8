"""The clinical-text judge's calibration, kept on disk so that the app and the trainer calibrate it once.

Calibrating the judge (``clinical_text.ClinicalTextJudge.calibrate``) scores every shipped
reference answer under the base: seconds of the base model's time. The app needs the judge at
the first edit after a start, under the generation lock, so answers would wait for it; the
trainer needs it before its first evaluation and calibrates it while it prepares, when the app
starts. Both read and write ``checkpoints/.eval-cache/judge-<key>.json``, whose key hashes exactly
what the calibration depends on: the base (``eval_cache.base_identity``), how it is loaded
(device, 4-bit), the system prompt and the shipped questions with their reference answers. A
file with another key is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..core.config import Settings
from ..core.files import atomic_write_text
from .clinical_text import MARGIN_NATS, REFERENCE_QUANTILE, ClinicalTextJudge
from .eval_cache import CACHE_DIR, base_identity
from .evalsets import load_eval_questions
from .model_view import ModelView

log = logging.getLogger(__name__)

# Bump when the way a reply's NLL is measured changes, so older files stop matching.
JUDGE_FORMAT = 1


class JudgeCache:
    """The judge's calibration for one base, load, and system prompt, in the checkpoints folder.

    Args:
        checkpoints_dir: the app's checkpoints folder; the file goes under its ``.eval-cache/``.
        base_source: the base model's folder (or hub id), as loaded.
        system_prompt: the system message before every question (None or "" for none).
        device: ``cpu`` or ``cuda``, as resolved.
        load_in_4bit: whether the base is loaded in 4-bit.
    """

    def __init__(
        self, checkpoints_dir: Path, base_source: str | Path, system_prompt: str | None, device: str, load_in_4bit: bool
    ) -> None:
        self.root = Path(checkpoints_dir) / CACHE_DIR
        self._inputs = {
            "format": JUDGE_FORMAT,
            "quantile": REFERENCE_QUANTILE,
            "margin": MARGIN_NATS,
            "base": str(base_source),
            "system_prompt": system_prompt or None,
            "device": device,
            "load_in_4bit": load_in_4bit,
        }
        self._key: str | None = None

    @classmethod
    def for_settings(cls, settings: Settings, base_source: str | Path) -> "JudgeCache":
        """The cache the app and its trainer share: both load ``base_source`` as ``settings`` say."""
        return cls(
            settings.checkpoints_dir, base_source, settings.system_prompt, settings.resolved_device(), settings.load_in_4bit
        )

    @property
    def key(self) -> str:
        """The hash of the calibration's inputs (computed once: it reads the base's config files)."""
        if self._key is None:
            references = [[q.question, q.reference] for q in load_eval_questions()]
            inputs = {**self._inputs, "base": base_identity(self._inputs["base"]), "references": references}
            text = json.dumps(inputs, sort_keys=True, ensure_ascii=True)
            self._key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._key

    @property
    def path(self) -> Path:
        return self.root / f"judge-{self.key[:32]}.json"

    def read(self) -> ClinicalTextJudge | None:
        """The stored judge; None when absent, unreadable or another key's."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("key") != self.key:
                return None
            return ClinicalTextJudge(reference_nll=float(data["reference_nll"]), threshold=float(data["threshold"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable judge calibration %s: %s", self.path, exc)
            return None

    def write(self, judge: ClinicalTextJudge) -> None:
        """Store ``judge`` (atomically: a reader sees the old file or the new one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        payload = {"key": self.key, "reference_nll": judge.reference_nll, "threshold": judge.threshold}
        atomic_write_text(self.path, json.dumps(payload, indent=1))

    def judge(self, base: ModelView | Any, tokenizer) -> ClinicalTextJudge:
        """The stored judge, or one calibrated under ``base`` (the base model's view) and stored."""
        judge = self.read()
        if judge is None:
            started = time.perf_counter()
            judge = ClinicalTextJudge.calibrate(base, tokenizer, self._inputs["system_prompt"])
            self.write(judge)
            log.info("clinical-text judge calibrated in %.1f s and kept in %s", time.perf_counter() - started, self.path)
        return judge
