"""One training round: the judgements since the last version in, a new version out.

A round runs its stages in order, each logging one line with its figures:

1. rows: the new judgements, a seeded replay sample of older ones, held-out ones left out
   (``build_rows``);
2. SFT on the accepted and edited answers (``sft.train_sft``);
3. the preference stage: DPO on pairs, else KTO on labels (``preference.train_preference``;
   see ``--train-method``);
4. evaluation against the serving version (``version_eval.evaluate_version``);
5. the promotion gate (``gate.decide``);
6. publish, and serve the new version if the gate passed.

Each stage runs only if it has rows. The round runs in the trainer process (``process``) or in a
test, on its own copy of the base model, and reports progress through the status file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Settings
from ..evaluation.clinical_text import ClinicalTextJudge
from ..evaluation.model_view import ModelView
from ..evaluation.gate import decide, gate_summary
from ..evaluation.version_eval import VersionReport, build_eval_sets, evaluate_version
from ..feedback.ledger import FeedbackLedger, Judgement
from ..feedback.records import BASE_VERSION
from ..feedback.store import FeedbackStore
from ..feedback.training_rows import TrainingRows, build_rows
from ..versions.manifest import Manifest, PreferenceMetrics, RoundMetrics
from ..versions.registry import Registry
from .preference import choose_method, train_preference
from .sft import SFTResult, TrainConfig, attach_adapter, train_sft
from .status import StatusFile

log = logging.getLogger(__name__)

# Share of the progress bar for training; evaluation before publishing takes the rest.
TRAIN_SHARE = 0.75
FAULT_ENV = "HITL_TRAINER_FAULT"  # test hook: exception | oom | kill, injected at the start of training


@dataclass(frozen=True)
class _RoundRows:
    """What a round trains on: the new judgements, their rows, and the preference method chosen."""

    new: list[Judgement]
    rows: TrainingRows
    method: str | None  # "dpo", "kto", or None for no preference stage

    @property
    def preference(self) -> list[dict]:
        """The preference stage's rows (pairs for DPO, labels for KTO)."""
        return {"dpo": self.rows.dpo, "kto": self.rows.kto}.get(self.method or "", [])

    @property
    def teaches(self) -> bool:
        """Whether a stage has rows, from at least one new judgement: replayed rows alone teach nothing new."""
        rows = self.rows
        return bool(rows.sft or self.preference) and bool(set(rows.new_record_ids) & set(rows.record_ids))


class RoundRunner:
    """Runs training rounds in the current process (the trainer process, or a test).

    Args:
        settings: the app's settings; each stage reads its own section of them.
        base_source: folder or hub id of the base model.
    """

    def __init__(self, settings: Settings, base_source: str) -> None:
        self.base_source = base_source
        self.training = settings.training_config
        self.evaluation = settings.evaluation_config
        self.gate = settings.gate_config
        self.registry = Registry(settings.checkpoints_dir)
        self.ledger = FeedbackLedger(FeedbackStore(settings.feedback_dir))
        self.status = StatusFile(settings.checkpoints_dir)
        self.cfg = TrainConfig.from_config(self.training)
        self._base = None
        self._tokenizer = None
        self._judge: tuple[str | None, ClinicalTextJudge] | None = None  # (system prompt, judge), calibrated once

    def run(self, requested_by: str) -> str | None:
        """Train one round on the judgements since the last version; publish it, and serve it if the gate passes.

        Returns:
            The new version's name, or None when there was nothing new to train on.
        """
        started = time.perf_counter()
        todo = self._rows()
        if not todo.teaches:
            self.status.write(
                state="idle",
                progress=0.0,
                message=f"nothing to train: {len(todo.new)} new judgement(s) give no rows for "
                f"--train-method {self.training.train_method}",
            )
            return None
        parent = self.registry.active().version
        parent_dir = None if parent == BASE_VERSION else self.registry.adapter_dir(parent)
        self.status.write(
            progress=0.02,
            message=f"loading the base model for {len(todo.rows.sft)} SFT + {len(todo.preference)} {todo.method or ''} rows",
        )
        base, tokenizer = self._load()
        _inject_fault()
        model = attach_adapter(base, parent_dir, self.cfg)
        staging = self.registry.staging_dir()
        try:
            sft, preference = self._train(model, tokenizer, todo)
            model.save_pretrained(str(staging))
            trained_s = time.perf_counter() - started
            report = self._evaluate(model, tokenizer, parent, parent_dir)
            manifest = Manifest(
                version="pending",
                parent=parent,
                base_model=str(self.base_source),
                record_ids=todo.rows.record_ids,
                new_record_ids=todo.rows.new_record_ids,
                store_cursor=self.ledger.cursor,
                config=self._recorded_config(requested_by),
                metrics=RoundMetrics(
                    train_loss_before=sft.loss_before if sft else None,
                    train_loss_after=sft.loss_after if sft else None,
                    duration_s=round(time.perf_counter() - started, 2),
                    train_duration_s=round(trained_s, 2),
                    rows=todo.rows.counts,
                    sft_steps=sft.steps if sft else 0,
                    preference=preference,
                ),
                evaluation=report.metrics,
                gate=decide(report.metrics, self.gate),
                samples=report.samples,
            )
            version = self.registry.publish(staging, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            # Strip the LoRA layers so the next round starts from the clean base without a reload.
            self._base = model.unload()
        self._serve_if_passed(version, manifest, len(todo.new))
        return version

    def _rows(self) -> _RoundRows:
        """Stage 1: the rows of the judgements since the last version, with replay and hold-out."""
        self.ledger.refresh()
        cursor = self.registry.consumed_cursor()
        new = self.ledger.judgements(after=cursor)
        older = [j for j in self.ledger.judgements() if j.offset < cursor]
        rows = build_rows(
            new,
            older,
            self.training.replay_size,
            self.training.seed + len(self.registry.versions()),
            self.training.holdout_fraction,
        )
        method = choose_method(self.training.train_method, len(rows.dpo), len(rows.kto))
        log.info("rows: %d new judgement(s), %s; preference method %s", len(new), rows.counts, method or "none")
        return _RoundRows(new=new, rows=rows, method=method)

    def _train(self, model, tokenizer, todo: _RoundRows) -> tuple[SFTResult | None, PreferenceMetrics | None]:
        """Stages 2 and 3: SFT, then the preference stage, on the round's adapter (each if it has rows)."""
        # Share the progress bar between the stages by their rough cost: a preference row is a
        # chosen and a rejected sequence, each through the policy and the reference.
        sft_cost, pref_cost = len(todo.rows.sft), 4 * len(todo.preference)
        split = TRAIN_SHARE * sft_cost / (sft_cost + pref_cost)
        sft = None
        if todo.rows.sft:
            sft = train_sft(
                model,
                tokenizer,
                todo.rows.sft_new,
                self.cfg,
                progress=lambda f, m: self._progress(f * split, m),
                replay=todo.rows.sft_replay,
            )
        preference = None
        if todo.method is not None:
            preference = train_preference(
                model,
                tokenizer,
                todo.method,
                todo.preference,
                self.cfg,
                beta=self.training.beta,
                progress=lambda f, m: self._progress(split + f * (TRAIN_SHARE - split), m),
                reference="base",
            )
        return sft, preference

    def _evaluate(self, model, tokenizer, parent: str, parent_dir: Path | None) -> VersionReport:
        """Stage 4: the new adapter against the serving version, on held-out feedback and the shipped sets."""
        sets = build_eval_sets(self.ledger.judgements(), self.evaluation)
        if self._judge is None or self._judge[0] != sets.system_prompt:
            judge = ClinicalTextJudge.calibrate(ModelView.base(model), tokenizer, sets.system_prompt)
            self._judge = (sets.system_prompt, judge)
        return evaluate_version(
            model,
            tokenizer,
            parent,
            parent_dir,
            sets,
            self.evaluation,
            progress=lambda f, m: self._progress(TRAIN_SHARE + f * (1 - TRAIN_SHARE), m),
            judge=self._judge[1],
            serving_samples=None if parent_dir is None else self.registry.manifest(parent).samples,
        )

    def _serve_if_passed(self, version: str, manifest: Manifest, new_judgements: int) -> None:
        """Stages 5 and 6: a published version is served if it passed the gate, else held back."""
        if manifest.held_back:
            log.warning("%s held back by the promotion gate: %s", version, gate_summary(manifest))
            return
        self.registry.set_active(version, by="trainer", reason=f"trained on {new_judgements} new judgement(s)")
        log.info("%s published and serving (gate: %s)", version, gate_summary(manifest))

    def _recorded_config(self, requested_by: str) -> dict:
        """The round's settings as its manifest records them."""
        return {
            **self.cfg.to_dict(),
            "replay_size": self.training.replay_size,
            "train_method": self.training.train_method,
            "beta": self.training.beta,
            "holdout_fraction": self.training.holdout_fraction,
            "requested_by": requested_by,
        }

    def _load(self):
        from ..serving.base_model import LoadOptions, load_base, load_tokenizer

        if self._base is None:
            options = LoadOptions(device=self.cfg.device, load_in_4bit=self.training.load_in_4bit)
            self._tokenizer = load_tokenizer(self.base_source)
            self._base = load_base(self.base_source, options)
        return self._base, self._tokenizer

    def _progress(self, fraction: float, message: str) -> None:
        self.status.write(progress=round(min(0.99, 0.05 + 0.94 * fraction), 3), message=message)


def _inject_fault() -> None:
    fault = os.environ.get(FAULT_ENV, "")
    if fault == "exception":
        raise RuntimeError("injected trainer fault")
    if fault == "oom":
        import torch

        raise torch.OutOfMemoryError("injected out-of-memory in the trainer")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
