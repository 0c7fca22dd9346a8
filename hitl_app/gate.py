"""The promotion gate: a new version is served only if it is not worse than the serving one.

Six rules, each with a documented tolerance (``--gate-*`` flags):

- held-out preference accuracy may fall at most ``gate_max_accuracy_drop`` below the serving
  version's, measured on the same held-out pairs (checked once there are ``gate_min_pairs``);
- perplexity on the probe texts may rise at most ``gate_max_perplexity_rise`` (a fraction) above
  the serving version's;
- KL(new || base) per token on probe prompts stays within ``gate_kl_budget``;
- the mean per-token log-prob of the clinicians' held-out edited answers (or, before there are
  any, of the shipped reference answers) may fall at most ``gate_max_logprob_drop`` nats below
  the serving version's: a version must not make answers clinicians wrote less likely;
- on the red-team prompts (``redteam``), the safe-answer rate on adversarial prompts may fall, and
  the over-refusal rate on benign questions may rise, at most ``gate_max_safety_drop``.

With ``--gate off`` the checks are still computed and recorded, but they do not block.
"""

from __future__ import annotations

from .config import Settings
from .schema import EvalMetrics, GateCheck, GateResult, Manifest


def decide(evaluation: EvalMetrics, settings: Settings) -> GateResult:
    """Apply the gate's rules to a new version's evaluation."""
    checks = [
        _accuracy(evaluation, settings),
        _perplexity(evaluation, settings),
        _kl(evaluation, settings),
        _logprob(evaluation, settings),
        *_safety(evaluation, settings),
    ]
    enabled = settings.gate == "on"
    return GateResult(enabled=enabled, passed=not enabled or all(c.passed for c in checks), checks=checks)


def _accuracy(e: EvalMetrics, settings: Settings) -> GateCheck:
    if e.heldout_pairs < settings.gate_min_pairs or e.heldout_accuracy is None or e.serving_heldout_accuracy is None:
        return GateCheck(
            metric="heldout_accuracy",
            value=e.heldout_accuracy,
            serving=e.serving_heldout_accuracy,
            passed=True,
            note=f"not checked: {e.heldout_pairs} held-out pair(s), {settings.gate_min_pairs} needed",
        )
    limit = e.serving_heldout_accuracy - settings.gate_max_accuracy_drop
    return GateCheck(
        metric="heldout_accuracy",
        value=e.heldout_accuracy,
        serving=e.serving_heldout_accuracy,
        limit=limit,
        passed=e.heldout_accuracy >= limit,
        note=f"at least the serving version's minus {settings.gate_max_accuracy_drop}",
    )


def _perplexity(e: EvalMetrics, settings: Settings) -> GateCheck:
    limit = e.serving_perplexity * (1 + settings.gate_max_perplexity_rise)
    return GateCheck(
        metric="perplexity",
        value=e.perplexity,
        serving=e.serving_perplexity,
        limit=limit,
        passed=e.perplexity <= limit,
        note=f"at most {settings.gate_max_perplexity_rise:.0%} above the serving version's",
    )


def _kl(e: EvalMetrics, settings: Settings) -> GateCheck:
    return GateCheck(
        metric="kl_base",
        value=e.kl_base,
        limit=settings.gate_kl_budget,
        passed=e.kl_base <= settings.gate_kl_budget,
        note="KL(new || base), nats per token",
    )


def _logprob(e: EvalMetrics, settings: Settings) -> GateCheck:
    if e.edit_logprob is not None and e.serving_edit_logprob is not None:
        metric, value, serving = "edit_logprob", e.edit_logprob, e.serving_edit_logprob
    else:
        metric, value, serving = "reference_logprob", e.reference_logprob, e.serving_reference_logprob
    if value is None or serving is None:
        return GateCheck(metric=metric, value=value, serving=serving, passed=True, note="not measured")
    limit = serving - settings.gate_max_logprob_drop
    return GateCheck(
        metric=metric,
        value=value,
        serving=serving,
        limit=limit,
        passed=value >= limit,
        note=f"nats per token; at most {settings.gate_max_logprob_drop} below the serving version's",
    )


def _safety(e: EvalMetrics, settings: Settings) -> list[GateCheck]:
    tol = settings.gate_max_safety_drop
    checks = []
    if e.safe_rate is not None and e.serving_safe_rate is not None:
        limit = e.serving_safe_rate - tol
        checks.append(GateCheck(metric="safe_rate", value=e.safe_rate, serving=e.serving_safe_rate, limit=limit,
                                passed=e.safe_rate >= limit, note=f"adversarial prompts answered safely; at most {tol} below the serving version's"))
    if e.over_refusal_rate is not None and e.serving_over_refusal_rate is not None:
        limit = e.serving_over_refusal_rate + tol
        checks.append(GateCheck(metric="over_refusal_rate", value=e.over_refusal_rate, serving=e.serving_over_refusal_rate,
                                limit=limit, passed=e.over_refusal_rate <= limit,
                                note=f"benign questions refused; at most {tol} above the serving version's"))
    return checks


def gate_summary(manifest: Manifest) -> str:
    """One line on the gate's verdict, naming each failing metric with its value and limit."""
    gate = manifest.gate
    if gate is None:
        return "not evaluated"
    if not gate.failures:
        return "passed" if gate.enabled else "gate off"
    return "; ".join(f"{c.metric} {_fmt(c.value)} beyond limit {_fmt(c.limit)}" for c in gate.failures)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
