"""The Dashboard's frames: pure functions of the judgements, the versions' manifests and the round log.

They are tested without a browser. Every builder returns a frame with its columns even when there
is no data yet, so an empty store draws empty plots rather than errors.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Sequence

import pandas as pd

from ..comparison.stats import pairwise_counts, win_rate
from ..comparison.votes import VoteOutcome, vote_outcomes
from ..feedback.ledger import Judgement
from ..feedback.records import BASE_VERSION, utc_now
from ..service.views import DashboardData, StyleAdoption
from ..versions.manifest import Manifest, RoundRecord, TrainerStatus

# The gate's metrics, as plotted: (metric name in GateCheck, plot title, y-axis title).
GATE_METRICS = (
    ("heldout_accuracy", "Held-out preference accuracy", "accuracy"),
    ("perplexity", "Perplexity on the probe texts", "perplexity"),
    ("edit_logprob", "Log-prob of held-out edited answers", "nats / token"),
    ("reference_logprob", "Log-prob of the shipped reference answers", "nats / token"),
    ("safe_rate", "Red-team prompts answered safely", "share"),
    ("over_refusal_rate", "Benign questions refused", "share"),
    ("loop_rate", "Sampled answers caught in a repeated loop", "share"),
    ("unclear_rate", "Sampled answers that do not read as clinical text", "share"),
)


def _naive_utc(when: datetime) -> pd.Timestamp:
    """A UTC timestamp without a zone: what the plots' time axes expect."""
    return pd.Timestamp(when).tz_convert("UTC").tz_localize(None)


def _version_key(version: str) -> tuple[int, str]:
    """Base first, then versions in publication order (their names sort that way)."""
    return (0, "") if version == BASE_VERSION else (1, version)


def judgements_over_time(judgements: Sequence[Judgement]) -> pd.DataFrame:
    """Cumulative judgements of each kind (accept, edit, reject, rank, vote) at each judgement's time."""
    rows, counts = [], Counter()
    for j in judgements:
        counts[j.feedback.action] += 1
        rows.append({"time": _naive_utc(j.feedback.created_at), "kind": j.feedback.action, "judgements": counts[j.feedback.action]})
    return pd.DataFrame(rows, columns=["time", "kind", "judgements"])


def rates_per_version(judgements: Sequence[Judgement]) -> pd.DataFrame:
    """The share of each kind of judgement among the judgements of each version's answers.

    Blind A/B votes are left out: they judge two versions against each other, not one version's
    answer. As the model learns, the share of edits and rejections should fall.
    """
    by_version: dict[str, Counter] = defaultdict(Counter)
    for j in judgements:
        fb = j.feedback
        if fb.action == "vote":
            continue
        by_version[j.generation.version_of(fb.candidate)][fb.action] += 1
    rows = []
    for version in sorted(by_version, key=_version_key):
        total = sum(by_version[version].values())
        for action, n in sorted(by_version[version].items()):
            rows.append({"version": version, "kind": action, "rate": n / total, "judgements": n})
    return pd.DataFrame(rows, columns=["version", "kind", "rate", "judgements"])


def training_per_version(manifests: Sequence[Manifest]) -> pd.DataFrame:
    """SFT loss before and after, and the preference stage's loss and reward margin, per version."""
    rows = []
    for m in manifests:
        pref = m.metrics.preference
        figures = {
            "SFT loss before": m.metrics.train_loss_before,
            "SFT loss after": m.metrics.train_loss_after,
            "preference loss": pref.loss if pref else None,
            "preference reward margin": pref.reward_margin if pref else None,
        }
        rows.extend({"version": m.version, "figure": k, "value": v} for k, v in figures.items() if v is not None)
    return pd.DataFrame(rows, columns=["version", "figure", "value"])


def gate_metric_per_version(manifests: Sequence[Manifest], metric: str) -> pd.DataFrame:
    """One gate metric per evaluated version: the new version's value, the serving version's, and the gate's limit.

    The limit is what the gate compared the value with when the version was trained; a version
    whose value is on the wrong side of its limit was held back.
    """
    rows = []
    for m in manifests:
        check = next((c for c in m.gate.checks if c.metric == metric), None) if m.gate else None
        if check is None:
            continue
        for series, value in (("new version", check.value), ("serving before it", check.serving), ("gate limit", check.limit)):
            if value is not None:
                rows.append({"version": m.version, "series": series, "value": value})
    return pd.DataFrame(rows, columns=["version", "series", "value"])


def kl_per_version(manifests: Sequence[Manifest], budget: float) -> pd.DataFrame:
    """KL(new || base) and KL(new || serving) per token on the probe prompts, with the KL budget."""
    rows = []
    for m in manifests:
        if m.evaluation is None:
            continue
        e = m.evaluation
        rows += [
            {"version": m.version, "series": "KL(new || base)", "value": e.kl_base},
            {"version": m.version, "series": "KL(new || serving)", "value": e.kl_serving},
            {"version": m.version, "series": "KL budget", "value": budget},
        ]
    return pd.DataFrame(rows, columns=["version", "series", "value"])


def style_adoption(rows: Sequence[StyleAdoption]) -> pd.DataFrame:
    """For each admin-defined style, the share of each version's sample answers that show it (base first)."""
    return pd.DataFrame([r.model_dump() for r in rows], columns=["version", "style", "adoption", "answers"])


def unclear_edits_per_reviewer(judgements: Sequence[Judgement]) -> pd.DataFrame:
    """Per reviewer: edits saved, and how many of them did not read as clinical text when saved."""
    edits: Counter = Counter()
    unclear: Counter = Counter()
    for j in judgements:
        fb = j.feedback
        if fb.action != "edit":
            continue
        edits[fb.reviewer] += 1
        unclear[fb.reviewer] += any(f.kind == "unclear_text" for f in fb.flags)
    rows = []
    for reviewer in sorted(edits):
        rows.append({"reviewer": reviewer, "kind": "edits", "count": edits[reviewer]})
        rows.append({"reviewer": reviewer, "kind": "unclear edits", "count": unclear[reviewer]})
    return pd.DataFrame(rows, columns=["reviewer", "kind", "count"])


def ab_win_rates(votes: Sequence[VoteOutcome]) -> pd.DataFrame:
    """For every pair of versions compared blind, each side's win rate (a tie is half a win each).

    The two sides of a pair sum to 1; "both bad" votes count for neither and are reported in
    ``votes`` only.
    """
    pairs = sorted({tuple(sorted((v.a, v.b), key=_version_key)) for v in votes if v.a != v.b})
    rows = []
    for a, b in pairs:
        c = pairwise_counts([(v.a, v.b, v.outcome) for v in votes], a, b)
        rate = win_rate(c.wins, c.ties, c.losses)
        if rate is None:
            continue
        for version, share in ((a, rate), (b, 1 - rate)):
            rows.append({"pair": f"{a} vs {b}", "version": version, "win_rate": share, "votes": c.total})
    return pd.DataFrame(rows, columns=["pair", "version", "win_rate", "votes"])


def retrain_timeline(rounds: Sequence[RoundRecord], trainer: TrainerStatus | None = None) -> pd.DataFrame:
    """Each round's start, duration and outcome; a round in progress shows as "running" so far."""
    rows = [
        {
            "started": _naive_utc(r.started_at),
            "duration_s": r.duration_s,
            "outcome": r.outcome,
            "version": r.version or "",
            "detail": r.detail,
        }
        for r in rounds
    ]
    if trainer is not None and trainer.state == "training" and trainer.started_at is not None:
        elapsed = (utc_now() - trainer.started_at).total_seconds()
        rows.append({"started": _naive_utc(trainer.started_at), "duration_s": round(elapsed, 1),
                     "outcome": "running", "version": "", "detail": trainer.message})
    return pd.DataFrame(rows, columns=["started", "duration_s", "outcome", "version", "detail"])


def refresh(data: DashboardData) -> list[pd.DataFrame]:
    """Every plot's frame, in ``build_dashboard``'s layout order, from one read of the service."""
    judgements, manifests = data.judgements, data.manifests
    return [
        judgements_over_time(judgements),
        rates_per_version(judgements),
        training_per_version(manifests),
        kl_per_version(manifests, data.kl_budget),
        *(gate_metric_per_version(manifests, metric) for metric, _, _ in GATE_METRICS),
        ab_win_rates(vote_outcomes(judgements)),
        retrain_timeline(data.rounds, data.trainer),
        style_adoption(data.style_adoption),
        unclear_edits_per_reviewer(judgements),
    ]
