"""One training round: the judgements since the last version in, a new version out.

A round runs its stages in order, each logging one line with its figures:

1. rows: the new judgements, a seeded replay sample of older ones, held-out ones left out
   (``build_rows``); with several reviews per queued item, only resolved items' consensus,
   adjudications and edits (``feedback.team``);
2. SFT on the accepted and edited answers (``sft.train_sft``);
3. the preference stage: DPO on pairs, else KTO on labels (``preference.train_preference``;
   see ``--train-method``);
   3b. the reward model (``reward.train_reward``, ``--reward-model``): TRL's RewardTrainer on the
   same pairs, a LoRA with a score head on the same base continuing from the parent's, measured
   on the held-out pairs and saved into the version folder, so it is published with the policy;
   3c. with ``--train-method rl``, RL instead of DPO/KTO (``rl.train_rl``, TRL's GRPO): the policy
   samples answers to questions nobody judged (``rl_prompts``), rewarded by the reward model and
   the safety checks, with a KL penalty to the base;
4. evaluation against the serving version (``version_eval.evaluate_version``): the new version
   is measured; the serving version's figures on the shipped data are read back from its manifest
   or the base's cache (``eval_cache``) when the evaluation's inputs are unchanged;
5. the promotion gate (``gate.decide``);
6. publish, and serve the new version if the gate passed.

Each stage runs only if it has rows. The round runs in the trainer process (``process``) or in a
test, on its own copy of the base model, and reports progress through the status file. No stage
runs an evaluation pass inside TRL: the stages' losses and reward figures come from their training
steps' logs, and the manifest says so. With ``--round-budget-s`` the replay sample and the
evaluation's sets are cut to fit the budget, estimated from the previous round's stage times.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.chat import chat_prompt
from ..core.config import Settings
from ..evaluation.clinical_text import ClinicalTextJudge
from ..evaluation.eval_cache import BaseCache, FixedFigures, base_identity, eval_key
from ..evaluation.judge_cache import JudgeCache
from ..evaluation.model_view import ModelView
from ..evaluation.gate import decide, gate_summary
from ..evaluation.reward_eval import reward_evaluation
from ..evaluation.version_eval import EvalSets, VersionReport, build_eval_sets, evaluate_version, measure_fixed
from ..feedback.ledger import FeedbackLedger, Judgement
from ..feedback.records import BASE_VERSION
from ..feedback.store import FeedbackStore
from ..feedback.team import training_judgements
from ..feedback.training_rows import TrainingRows, build_rows
from ..versions.manifest import EvalMetrics, Manifest, RewardModelMetrics, RLMetrics, RoundMetrics
from ..versions.registry import REWARD_SUBDIR, Registry
from .faults import inject_fault
from .launch import ADAPTER_SUBDIR, Launcher, PolicyJob
from .policy import PolicyRows, train_policy
from .preference import choose_method
from .rl_prompts import rl_prompts
from .sft import TrainConfig, attach_adapter
from .status import StatusFile
from .threads import ThreadGovernor

log = logging.getLogger(__name__)

# Share of the progress bar for training; evaluation before publishing takes the rest.
TRAIN_SHARE = 0.75
OWN_REWARD = "own"  # the reward evaluation's source when the round trained its own reward model


@dataclass(frozen=True)
class _RoundRows:
    """What a round trains on: the new judgements, their rows, and the preference method chosen."""

    new: list[Judgement]
    rows: TrainingRows
    method: str | None  # "dpo", "kto", or None for no preference stage
    budget: dict = field(default_factory=dict)  # what --round-budget-s decided; empty without a budget
    rl: bool = False  # --train-method rl: an RL stage against the reward model

    @property
    def preference(self) -> list[dict]:
        """The preference stage's rows (pairs for DPO, labels for KTO)."""
        return {"dpo": self.rows.dpo, "kto": self.rows.kto}.get(self.method or "", [])

    @property
    def reward_pairs(self) -> list[dict]:
        """The reward model's rows: the round's preference pairs (new and replayed, held-out ones excluded)."""
        return self.rows.dpo

    @property
    def teaches(self) -> bool:
        """Whether a stage has rows, from at least one new judgement: replayed rows alone teach nothing new."""
        rows = self.rows
        rl = self.rl and bool(self.reward_pairs)  # an RL round learns its pairs through the reward model
        return bool(rows.sft or self.preference or rl) and bool(set(rows.new_record_ids) & set(rows.record_ids))


@dataclass(frozen=True)
class _StageTimes:
    """Seconds per unit of each stage, from the newest round that recorded them (the budget's estimates)."""

    sft_step_s: float | None
    preference_row_s: float | None
    eval_s: float | None  # the whole evaluation, at full size

    def train_s(self, rows: TrainingRows, method: str | None, epochs: float, batch_size: int) -> float:
        """Estimated seconds to train on ``rows``."""
        steps = math.ceil((math.ceil(epochs * len(rows.sft_new)) + len(rows.sft_replay)) / batch_size)
        preference = len({"dpo": rows.dpo, "kto": rows.kto}.get(method or "", []))
        return steps * (self.sft_step_s or 0.0) + preference * (self.preference_row_s or 0.0)


@dataclass(frozen=True)
class _Spans:
    """Each training stage's (start, end) on the progress bar, which training fills up to ``TRAIN_SHARE``."""

    spans: dict[str, tuple[float, float]]

    @classmethod
    def of(cls, costs: list[tuple[str, float]]) -> _Spans:
        """Spans in the order given, each as wide as its share of the summed costs."""
        total = sum(cost for _, cost in costs) or 1.0
        spans, start = {}, 0.0
        for name, cost in costs:
            end = start + TRAIN_SHARE * cost / total
            spans[name] = (start, end)
            start = end
        return cls(spans)

    def at(self, stage: str, fraction: float) -> float:
        """The bar's position ``fraction`` of the way through ``stage``."""
        start, end = self.spans[stage]
        return start + fraction * (end - start)


class RoundRunner:
    """Runs training rounds in the current process (the trainer process, or a test).

    Args:
        settings: the app's settings; each stage reads its own section of them.
        base_source: folder or hub id of the base model.
        threads: sets the trainer's thread count before every step and measurement (the trainer
            process's); None leaves torch's thread count alone.
    """

    def __init__(self, settings: Settings, base_source: str, threads: ThreadGovernor | None = None) -> None:
        self.base_source = base_source
        self.training = settings.training_config
        self.evaluation = settings.evaluation_config
        self.gate = settings.gate_config
        self.registry = Registry(settings.checkpoints_dir)
        self.feedback_dir = settings.feedback_dir
        self.ledger = FeedbackLedger(FeedbackStore(settings.feedback_dir))
        self.status = StatusFile(settings.checkpoints_dir)
        self.cfg = TrainConfig.from_config(self.training)
        self.cache = BaseCache(settings.checkpoints_dir)
        self.judges = JudgeCache.for_settings(settings, base_source)
        self.threads = threads
        self._base = None
        self._reward_base = None  # the sequence-classification base, loaded at the first reward stage
        self._tokenizer = None
        self._base_id: str | None = None
        self._judge: ClinicalTextJudge | None = None  # read or calibrated once (``judges``)

    def prepare(self) -> None:
        """Do once, before the first round, what every round needs: load the base, calibrate the
        clinical-text judge, and measure the base's figures on the shipped data when the base is
        serving and the base cache lacks them. Judge and figures are kept in the checkpoints
        folder, so a restarted trainer reads them back, and the app reads the judge from there."""
        base, tokenizer = self._load()
        sets = build_eval_sets([], self.evaluation)
        key = self._eval_key(sets)
        view = ModelView(base)
        with self._watching(base):
            self._clinical_judge(view, tokenizer)
            if self.registry.active().version == BASE_VERSION and self.cache.read(key) is None:
                started = time.perf_counter()
                fixed = measure_fixed(
                    view, view, tokenizer, sets, self.evaluation.system_prompt, progress=lambda f, m: self._apply_threads()
                )
                self.cache.write(key, fixed)
                log.info("the base's figures on the shipped data measured in %.1f s and cached", time.perf_counter() - started)

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
        inject_fault()
        staging = self.registry.staging_dir()
        model = None
        try:
            model, sft, preference = self._train(base, tokenizer, parent_dir, todo)
            # The held-out data, read once: the reward model and the policy are measured on the same pairs.
            sets = build_eval_sets(self._usable(), self.evaluation)
            reward = self._train_reward(tokenizer, todo, parent, staging, sets.pairs)
            own_reward = staging / REWARD_SUBDIR if reward else None
            rl = self._train_rl(model, tokenizer, todo, own_reward, parent)
            model.save_pretrained(str(staging))
            trained_s = time.perf_counter() - started
            fraction = self._eval_fraction(started, todo)
            with self._watching(base):
                report = self._evaluate(model, tokenizer, parent, parent_dir, sets, fraction)
            evaluation = self._with_reward_eval(report, tokenizer, own_reward, parent)
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
                    train_loss_from=sft.losses_from if sft else None,
                    duration_s=round(time.perf_counter() - started, 2),
                    train_duration_s=round(trained_s, 2),
                    rows=todo.rows.counts,
                    sft_steps=sft.steps if sft else 0,
                    sft_duration_s=round(sft.duration_s, 2) if sft else None,
                    preference=preference,
                    reward_model=reward,
                    rl=rl,
                    **({"budget": {**todo.budget, "eval_fraction": round(fraction, 3)}} if todo.budget else {}),
                ),
                evaluation=evaluation,
                gate=decide(evaluation, self.gate),
                samples=report.samples,
            )
            version = self.registry.publish(staging, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if model is not None:
                # Strip the LoRA layers so the next round starts from the clean base without a reload.
                self._base = model.unload()
        self._serve_if_passed(version, manifest, len(todo.new))
        return version

    def _rows(self) -> _RoundRows:
        """Stage 1: the rows of the judgements since the last version, with replay and hold-out.

        With a round budget, the replay sample is the largest (up to ``--replay-size``) whose
        estimated training time leaves the evaluation its estimated time.
        """
        cursor = self.registry.consumed_cursor()
        usable = self._usable()
        new = [j for j in usable if j.offset >= cursor]
        older = [j for j in usable if j.offset < cursor]
        seed = self.training.seed + len(self.registry.versions())

        def rows_with(replay_size: int) -> tuple[TrainingRows, str | None]:
            rows = build_rows(new, older, replay_size, seed, self.training.holdout_fraction)
            return rows, choose_method(self.training.train_method, len(rows.dpo), len(rows.kto))

        asked = self.training.replay_size
        rows, method = rows_with(asked)
        budget: dict = {}
        if self.training.round_budget_s > 0:
            times = self._stage_times()
            cost = lambda r, m: times.train_s(r, m, self.cfg.num_epochs, self.cfg.batch_size)  # noqa: E731
            allowed = self.training.round_budget_s - (times.eval_s or 0.0)
            used = asked
            if times.sft_step_s is not None and cost(rows, method) > allowed and asked > 0:
                low, high = 0, asked  # the largest replay size that fits (0 when none does)
                while low < high:
                    mid = (low + high + 1) // 2
                    if cost(*rows_with(mid)) <= allowed:
                        low = mid
                    else:
                        high = mid - 1
                used = low
                rows, method = rows_with(used)
            budget = {
                "round_budget_s": self.training.round_budget_s,
                "replay_size": used,
                "replay_size_asked": asked,
                "estimated_train_s": round(cost(rows, method), 1) if times.sft_step_s is not None else None,
                "estimated_eval_s": None if times.eval_s is None else round(times.eval_s, 1),
            }
            if used < asked:
                log.info("round budget %.0f s: replay cut from %d to %d judgements", self.training.round_budget_s, asked, used)
        rl = self.training.train_method == "rl"
        log.info("rows: %d new judgement(s), %s; preference method %s", len(new), rows.counts, "rl" if rl else method or "none")
        return _RoundRows(new=new, rows=rows, method=method, budget=budget, rl=rl)

    def _usable(self) -> list[Judgement]:
        """The judgements training may use: all of them, or with ``--reviews-per-item`` above 1 the
        consensus of resolved items, adjudications and every edit (``feedback.team``)."""
        self.ledger.refresh()
        return training_judgements(
            self.ledger.judgements(), self.training.reviews_per_item, self.training.consensus_threshold
        )

    def _stage_times(self) -> _StageTimes:
        """Seconds per SFT step, per preference row and for a full evaluation, from the newest version
        that recorded them (None each when no version did; the evaluation's from a version whose
        evaluation was not reduced)."""
        sft = preference = evaluation = None
        for manifest in reversed(self.registry.manifests()):
            metrics = manifest.metrics
            extra = metrics.model_extra or {}
            if sft is None and extra.get("sft_duration_s") and extra.get("sft_steps"):
                sft = extra["sft_duration_s"] / extra["sft_steps"]
            if preference is None and metrics.preference is not None and metrics.preference.rows:
                preference = metrics.preference.duration_s / metrics.preference.rows
            # A full evaluation's time: a reduced one's does not scale (its fixed parts stay whole).
            if evaluation is None and manifest.evaluation is not None and not manifest.evaluation.reduced:
                evaluation = manifest.evaluation.duration_s
            if sft is not None and preference is not None and evaluation is not None:
                break
        return _StageTimes(sft, preference, evaluation)

    def _eval_fraction(self, started: float, todo: _RoundRows) -> float:
        """The share of the evaluation's reducible sets that the round budget leaves time for (1: all)."""
        eval_s = todo.budget.get("estimated_eval_s") if todo.budget else None
        if not eval_s:
            return 1.0
        left = self.training.round_budget_s - (time.perf_counter() - started)
        return min(1.0, max(0.0, left / eval_s))

    def _train(self, base, tokenizer, parent_dir: Path | None, todo: _RoundRows):
        """Stages 2 and 3: SFT, then the preference stage, on the round's adapter (each if it has
        rows), in this process or, with ``--train-launcher accelerate``, in launched processes.

        Returns:
            The policy (``base`` with the trained adapter attached, trainable), and the two
            stages' figures (None each when it did not run).
        """
        spans = self._spans(todo)
        progress = lambda stage, fraction, message: self._progress(spans.at(stage, fraction), message)  # noqa: E731
        rows = PolicyRows(
            sft_new=todo.rows.sft_new,
            sft_replay=todo.rows.sft_replay,
            method=todo.method,
            preference=todo.preference,
            beta=self.training.beta,
        )
        if self.training.train_launcher == "accelerate" and (todo.rows.sft or todo.method is not None):
            return self._train_launched(base, parent_dir, rows, progress)
        model = attach_adapter(base, parent_dir, self.cfg)
        callbacks = [self.threads.callback()] if self.threads is not None else []
        with self._watching(base):
            sft, preference = train_policy(model, tokenizer, rows, self.cfg, progress, callbacks)
        return model, sft, preference

    def _train_launched(self, base, parent_dir: Path | None, rows: PolicyRows, progress):
        """The policy's training under ``accelerate launch`` (``launch``); its adapter is then
        attached to the kept base for the round's later stages."""
        processes = self.training.train_processes
        with tempfile.TemporaryDirectory(prefix="hitl-launch-") as work:
            job = PolicyJob(
                base_source=str(self.base_source),
                load_in_4bit=self.training.load_in_4bit,
                parent_adapter=None if parent_dir is None else str(parent_dir),
                out_dir=work,
                # Every process takes an equal share of each batch (the settings check divisibility).
                train={**self.cfg.to_dict(), "batch_size": self.cfg.batch_size // processes},
                rows=rows,
            )
            launched = Launcher(processes, self.training.accelerate_config).run(job, Path(work), progress)
            model = attach_adapter(base, Path(work) / ADAPTER_SUBDIR, self.cfg)
        preference = launched.preference
        if preference is not None:
            # The stage reported its batch per process; the manifest records the batch of a step.
            preference = preference.model_copy(update={"batch_size": preference.batch_size * launched.processes})
        return model, launched.sft_result(), preference

    def _spans(self, todo: _RoundRows) -> _Spans:
        """Each training stage's share of the progress bar, in the order they run, by rough cost: a
        preference row is a chosen and a rejected sequence, each through the policy and the
        reference; a reward pair is the two through one model, once per epoch; an RL answer is
        sampled, then scored and trained on (generation dominates a step on a CPU)."""
        reward = 2 * len(todo.reward_pairs) * self.training.reward_epochs if self._trains_reward(todo) else 0.0
        rl = self.training.rl_prompts * self.training.rl_generations if todo.rl else 0
        return _Spans.of([("sft", len(todo.rows.sft)), ("preference", 4 * len(todo.preference)), ("reward", reward), ("rl", rl)])

    def _trains_reward(self, todo: _RoundRows) -> bool:
        return self.training.reward_model == "on" and bool(todo.reward_pairs)

    def _reward_source(self, trained: Path | None, parent: str) -> tuple[str, Path] | None:
        """The reward model a stage uses: the round's own (saved in ``trained``), else the parent's nearest."""
        return (OWN_REWARD, trained) if trained is not None else self.registry.reward_source(parent)

    @contextlib.contextmanager
    def _reward_model(self, previous: Path | None, trainable: bool):
        """The kept reward base with a reward adapter: ``previous`` (None: a fresh one, trainable) for
        the block; afterwards the adapter and its head are stripped again, so the next use starts
        from the clean base."""
        from ..evaluation.reward_model import load_reward_base
        from .reward import attach_reward_adapter, unload_reward_adapter

        if self._reward_base is None:
            self._reward_base = load_reward_base(
                self.base_source, device=self.cfg.device, load_in_4bit=self.training.load_in_4bit
            )
        if trainable:
            model = attach_reward_adapter(self._reward_base, previous, self.cfg)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(self._reward_base, str(previous))
        try:
            with self._watching(model):
                yield model
        finally:
            self._reward_base = unload_reward_adapter(model)

    def _train_reward(
        self, tokenizer, todo: _RoundRows, parent: str, staging: Path, heldout: list[dict]
    ) -> RewardModelMetrics | None:
        """Stage 3b: the reward model on the round's pairs, continuing from the parent's (or its nearest
        ancestor's), measured on the ``heldout`` pairs and saved into ``staging/reward``; None when it
        does not run.

        A failure here fails the round like any stage: nothing is published and serving goes on.
        """
        if not self._trains_reward(todo):
            return None
        from ..evaluation.reward_model import pairwise_accuracy
        from .reward import train_reward

        started = time.perf_counter()
        inject_fault("reward")
        source = self.registry.reward_source(parent)
        spans = self._spans(todo)
        with self._reward_model(source[1] if source else None, trainable=True) as model:
            result = train_reward(
                model,
                tokenizer,
                todo.reward_pairs,
                self.cfg,
                epochs=self.training.reward_epochs,
                learning_rate=self.training.reward_learning_rate,
                progress=lambda f, m: self._progress(spans.at("reward", f), m),
                callbacks=[self.threads.callback()] if self.threads is not None else [],
            )
            accuracy = pairwise_accuracy(model, tokenizer, heldout) if heldout else None
            model.save_pretrained(str(staging / REWARD_SUBDIR))
        metrics = RewardModelMetrics(
            pairs=result.pairs,
            steps=result.steps,
            loss_first=result.loss_first,
            loss_last=result.loss_last,
            train_accuracy=result.train_accuracy,
            heldout_pairs=len(heldout),
            heldout_accuracy=accuracy.accuracy if accuracy else None,
            heldout_margin=accuracy.mean_margin if accuracy else None,
            continued_from=source[0] if source else None,
            duration_s=round(time.perf_counter() - started, 2),
        )
        log.info(
            "reward model: %d pairs, held-out accuracy %s on %d pairs, %.1f s",
            metrics.pairs, "n/a" if metrics.heldout_accuracy is None else f"{metrics.heldout_accuracy:.2f}",
            metrics.heldout_pairs, metrics.duration_s,
        )  # fmt: skip
        return metrics

    def _train_rl(self, model, tokenizer, todo: _RoundRows, trained: Path | None, parent: str) -> RLMetrics | None:
        """Stage 3c (``--train-method rl``): GRPO on the policy adapter against the reward model (the
        round's own, saved in ``trained``, else the parent's nearest) and the safety checks, on
        questions nobody judged; None when it does not run. A failure fails the round."""
        if not todo.rl:
            return None
        source = self._reward_source(trained, parent)
        if source is None:
            log.warning("--train-method rl: no reward model yet (the round had no pairs), so no RL stage")
            return None
        from ..evaluation.reward_model import score_completions
        from ..feedback.queue import ReviewQueue
        from ..feedback.store import QueueStore
        from ..safety.checker import SafetyChecker
        from .rl import reward_model_reward, safety_reward, train_rl

        inject_fault("rl")
        t = self.training
        queue = ReviewQueue(QueueStore(self.feedback_dir))
        chosen = rl_prompts(
            self.ledger.judgements(), self.ledger.generations(), queue.items(), t.rl_prompts, t.seed + len(self.registry.versions())
        )
        if not chosen.questions:
            log.warning("--train-method rl: every question has been judged, so no RL stage")
            return None
        spans = self._spans(todo)
        with self._reward_model(source[1], trainable=False) as reward, self._watching(model):
            result = train_rl(
                model,
                tokenizer,
                [chat_prompt(q, t.system_prompt or None) for q in chosen.questions],
                [reward_model_reward(reward, tokenizer, score_completions), safety_reward(SafetyChecker())],
                self.cfg,
                generations=t.rl_generations,
                max_new_tokens=t.rl_max_new_tokens,
                beta=t.rl_beta,
                learning_rate=t.rl_learning_rate,
                progress=lambda f, m: self._progress(spans.at("rl", f), m),
                callbacks=[self.threads.callback()] if self.threads is not None else [],
            )
        return RLMetrics(
            trainer=result.trainer,
            reward_version=source[0],
            prompts=result.prompts,
            prompt_sources=chosen.sources,
            generations=result.generations,
            steps=result.steps,
            beta=result.beta,
            reward_first=result.reward_first,
            reward_last=result.reward_last,
            rewards=result.rewards,
            kl_last=result.kl_last,
            completion_length=result.completion_length,
            reward_length_correlation=result.reward_length_correlation,
            duration_s=round(result.duration_s, 2),
        )

    def _with_reward_eval(self, report: VersionReport, tokenizer, trained: Path | None, parent: str) -> EvalMetrics:
        """The evaluation with both versions' sample answers scored by a reward model: the round's own
        (saved in ``trained``), else the parent's nearest; unchanged without one or without samples."""
        if self.training.reward_model != "on" or not report.samples:
            return report.metrics
        source = self._reward_source(trained, parent)
        if source is None:
            return report.metrics
        from ..evaluation.reward_model import score_completions

        with self._reward_model(source[1], trainable=False) as model:
            pairs = [
                score_completions(model, tokenizer, chat_prompt(s.question, s.system_prompt), [s.answer, s.serving_answer])
                for s in report.samples
            ]
        tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        figures = reward_evaluation(
            source[0],
            [new for new, _ in pairs],
            [old for _, old in pairs],
            [tokens(s.answer) for s in report.samples],
            [tokens(s.serving_answer) for s in report.samples],
            seed=self.evaluation.seed,
        )
        log.info(
            "reward model (%s) on %d sample answers: mean %.3f against the serving version's %.3f, win rate %.2f, "
            "length correlation %s", source[0], figures.prompts, figures.mean_reward, figures.serving_mean_reward,
            figures.win_rate, "n/a" if figures.length_correlation is None else f"{figures.length_correlation:.2f}",
        )  # fmt: skip
        return report.metrics.model_copy(update={"reward": figures})

    def _evaluate(
        self, model, tokenizer, parent: str, parent_dir: Path | None, sets: EvalSets, fraction: float = 1.0
    ) -> VersionReport:
        """Stage 4: the new adapter against the serving version, on held-out feedback and the shipped sets.

        The serving version's figures on the shipped data are read back from its manifest (or the
        base cache) when they were measured with this evaluation's key; the base's, once measured,
        are cached.
        """
        key = self._eval_key(sets)
        judge = self._clinical_judge(ModelView.base(model), tokenizer)
        report = evaluate_version(
            model,
            tokenizer,
            parent,
            parent_dir,
            sets,
            self.evaluation,
            progress=lambda f, m: self._progress(TRAIN_SHARE + f * (1 - TRAIN_SHARE), m),
            judge=judge,
            serving_fixed=self._serving_fixed(parent, key),
            key=key,
            fraction=fraction,
        )
        if parent == BASE_VERSION and report.serving_fixed is not None and report.serving_fixed.measured:
            self.cache.write(key, report.serving_fixed)
        return report

    def _serving_fixed(self, parent: str, key: str) -> FixedFigures | None:
        """The serving version's figures on the shipped data for ``key``: the base's cache, or its manifest."""
        if parent == BASE_VERSION:
            return self.cache.read(key)
        return FixedFigures.from_manifest(self.registry.manifest(parent), key)

    def _eval_key(self, sets: EvalSets) -> str:
        """The key of the evaluation's fixed inputs, the base model and the device included."""
        if self._base_id is None:
            self._base_id = base_identity(self.base_source)
        return eval_key(
            {
                **sets.fixed_inputs(),
                "seed": self.evaluation.seed,
                "beta": self.evaluation.beta,
                "base": self._base_id,
                "device": self.cfg.device,
            }
        )

    def _clinical_judge(self, base: ModelView, tokenizer) -> ClinicalTextJudge:
        """The clinical-text judge for this base and system prompt: kept in memory and on disk
        (``judge_cache``), calibrated only when neither has it."""
        if self._judge is None:
            self._judge = self.judges.judge(base, tokenizer)
        return self._judge

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
            "train_launcher": self.training.train_launcher,
            "train_processes": self.training.train_processes,
            "replay_size": self.training.replay_size,
            "train_method": self.training.train_method,
            "beta": self.training.beta,
            "holdout_fraction": self.training.holdout_fraction,
            "reward_model": self.training.reward_model,
            "reward_epochs": self.training.reward_epochs,
            "reward_learning_rate": self.training.reward_learning_rate,
            **(
                {k: getattr(self.training, k) for k in ("rl_prompts", "rl_generations", "rl_max_new_tokens", "rl_beta", "rl_learning_rate")}
                if self.training.train_method == "rl"
                else {}
            ),
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
        self._apply_threads()
        self.status.write(progress=round(min(0.99, 0.05 + 0.94 * fraction), 3), message=message)

    def _apply_threads(self) -> None:
        """Set the trainer's thread count for what comes next (between steps and measurements)."""
        if self.threads is not None:
            self.threads.apply()

    def _watching(self, module):
        """The thread count applied before every forward pass of ``module`` for the block (with a governor)."""
        return self.threads.watching(module) if self.threads is not None else contextlib.nullcontext()
