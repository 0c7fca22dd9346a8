"""A version's own figures on the shipped evaluation data, kept so that no evaluation measures them twice.

Figures on the fixed, shipped data (the reference answers' log-prob, probe perplexity, the greedy
sample answers and what they show, the red-team rates) depend only on the version and on the
evaluation's inputs. A published version's figures were measured when it was the new version of
its round and are in its manifest; the base's are measured once and kept in
``checkpoints/.eval-cache/base-<key>.json`` (the clinical-text judge's calibration has its own
file and key: ``judge_cache.py``). Either is read back only when the evaluation's inputs are identical: ``eval_key`` hashes them (the shipped
sets, the system prompt, token limits, prompt counts, seed, beta, the drug table, the base model
and the device), and a manifest or cache file with another key is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_text
from ..versions.manifest import Manifest

log = logging.getLogger(__name__)

# Bump when the way a fixed figure is measured changes, so older manifests and caches stop matching.
EVAL_FORMAT = 1
CACHE_DIR = ".eval-cache"
# A version's figures on the shipped data besides its sample answers (which are kept per question).
FIXED_FIGURES = (
    "reference_logprob", "perplexity", "redteam_prompts", "safe_rate", "over_refusal_rate", "medication_flag_rate",
)  # fmt: skip


def eval_key(inputs: dict[str, Any]) -> str:
    """The hash of an evaluation's fixed inputs (JSON-ready values), with ``EVAL_FORMAT``."""
    text = json.dumps({"format": EVAL_FORMAT, **inputs}, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_identity(source: str | Path) -> str:
    """What identifies a base model: its folder's config, conversion manifest and weight files (name and
    size), or the hub id as given."""
    folder = Path(source)
    if not folder.is_dir():
        return str(source)
    digest = hashlib.sha256()
    for name in ("config.json", "manifest.json"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SampleRecord:
    """One version's greedy answer to one sample question, and its NLL per token under the base."""

    answer: str
    finished: bool
    nll: float | None = None  # None: not recorded (measured again when needed)


@dataclass
class FixedFigures:
    """One version's figures on the shipped data, and where they come from.

    Args:
        figures: ``FIXED_FIGURES`` values (None where a figure was not measured).
        samples: its sample answers, by question id.
        source: ``measured`` (in this run), ``manifest vNNNN`` or ``base cache``.
        reduced: figures that were measured on fewer items than the full set, with how many.
    """

    figures: dict[str, Any]
    samples: dict[str, SampleRecord]
    source: str = "measured"
    reduced: dict[str, str] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """Whether these figures were measured in this run."""
        return self.source == "measured"

    def source_of(self, figure: str) -> str:
        """The source of one figure, with the items it was measured on when that was fewer than the full set."""
        return f"{self.source} ({self.reduced[figure]})" if figure in self.reduced else self.source

    @classmethod
    def from_manifest(cls, manifest: Manifest, key: str) -> "FixedFigures | None":
        """A published version's own figures, from its manifest; None unless it was evaluated with ``key``."""
        evaluation = manifest.evaluation
        if evaluation is None or evaluation.eval_key != key:
            return None
        return cls(
            figures={name: getattr(evaluation, name) for name in FIXED_FIGURES},
            samples={s.question_id: SampleRecord(s.answer, s.finished, s.answer_nll) for s in manifest.samples},
            source=f"manifest {manifest.version}",
            reduced={k: v for k, v in evaluation.reduced.items() if k in FIXED_FIGURES},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": self.figures,
            "samples": {qid: [r.answer, r.finished, r.nll] for qid, r in self.samples.items()},
            "reduced": self.reduced,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> "FixedFigures":
        return cls(
            figures={name: data["figures"].get(name) for name in FIXED_FIGURES},
            samples={qid: SampleRecord(a, bool(f), n) for qid, (a, f, n) in data["samples"].items()},
            source=source,
            reduced=dict(data.get("reduced", {})),
        )


class BaseCache:
    """The base model's figures on the shipped data, one file per evaluation key, written atomically.

    Args:
        checkpoints_dir: the app's checkpoints folder; files go under its ``.eval-cache/``.
    """

    def __init__(self, checkpoints_dir: Path) -> None:
        self.root = Path(checkpoints_dir) / CACHE_DIR

    def path(self, key: str) -> Path:
        return self.root / f"base-{key[:32]}.json"

    def read(self, key: str) -> FixedFigures | None:
        """The cached figures for ``key``; None when absent, unreadable, another key's or empty."""
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
            if data.get("key") != key or not data.get("fixed"):
                return None
            return FixedFigures.from_json(data["fixed"], "base cache")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable base evaluation cache %s: %s", self.path(key), exc)
            return None

    def write(self, key: str, figures: FixedFigures) -> None:
        """Store the base's figures; a reduced measurement is never stored, so it leaves the file as it was."""
        if figures.reduced:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(key), json.dumps({"key": key, "fixed": figures.to_json()}, indent=1))
