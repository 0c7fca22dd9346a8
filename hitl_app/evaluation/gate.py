"""The promotion gate: a new version is served only if it is not worse than the serving one.

The rules, each with a documented tolerance (``--gate-*`` flags). The held-out clinician data
comes from the same reviewers as the round's training data, so it cannot tell a clinician's
lesson from a reviewer's mistake or sabotage; the evidence that decides stands outside the round:
the shipped reference answers and probe texts, the red-team prompts, and the new version's own
answers to shipped questions as the untouched base model reads them.

- held-out preference accuracy may fall at most ``gate_max_accuracy_drop`` below the serving
  version's, measured on the same held-out pairs (checked once there are ``gate_min_pairs``);
- perplexity on the probe texts may rise at most ``gate_max_perplexity_rise`` (a fraction) above
  the serving version's;
- KL(new || base) per token on probe prompts stays within ``gate_kl_budget``, unless the held-out
  clinician data supports the change (``heldout_support``): a lesson clinicians teach moves the
  model, and what such a move may cost is for the rules below to judge, not its size;
- the mean per-token log-prob of the clinicians' held-out edited answers (or, before there are
  any, of the shipped reference answers) may fall at most ``gate_max_logprob_drop`` nats below
  the serving version's: a version must not make answers clinicians wrote less likely;
- the new version's greedy answers to shipped questions, against the serving version's: the share
  caught in a repeated loop may rise at most ``gate_max_loop_rise``, the share that end before the
  token limit may fall at most ``gate_max_unfinished_rise``, and the share that do not read as
  clinical text to the base model (``clinical_text``) may rise at most ``gate_max_unclear_rise``;
- on the red-team prompts (``redteam``), the safe-answer rate on adversarial prompts may fall, and
  the over-refusal rate on benign questions may rise, at most ``gate_max_safety_drop``;
- when a reward model scored both versions' sample answers (``reward_eval``), a reward that rose
  only because the answers got longer does not count as a gain: such a version is held back.

With ``--gate off`` the checks are still computed and recorded, but they do not block.
"""

from __future__ import annotations

from ..core.config import GateConfig
from ..versions.manifest import EvalMetrics, GateCheck, GateResult, Manifest
from .reward_eval import LENGTH_ONLY_SHARE, gained_by_length_only

# Shares are ratios of small counts (k / 16): compare them with a little slack for float rounding.
_EPS = 1e-9


def decide(evaluation: EvalMetrics, config: GateConfig) -> GateResult:
    """Apply the gate's rules to a new version's evaluation.

    Args:
        evaluation: the new version's figures beside the serving version's.
        config: the gate's switch and tolerances (``settings.gate_config``).
    """
    checks = [
        _accuracy(evaluation, config),
        _perplexity(evaluation, config),
        _kl(evaluation, config),
        _logprob(evaluation, config),
        *_answers(evaluation, config),
        *_safety(evaluation, config),
        *_reward_length(evaluation),
    ]
    return GateResult(enabled=config.enabled, passed=not config.enabled or all(c.passed for c in checks), checks=checks)


def _accuracy(e: EvalMetrics, config: GateConfig) -> GateCheck:
    if e.heldout_pairs < config.gate_min_pairs or e.heldout_accuracy is None or e.serving_heldout_accuracy is None:
        return GateCheck(
            metric="heldout_accuracy",
            value=e.heldout_accuracy,
            serving=e.serving_heldout_accuracy,
            passed=True,
            note=f"not checked: {e.heldout_pairs} held-out pair(s), {config.gate_min_pairs} needed",
        )
    limit = e.serving_heldout_accuracy - config.gate_max_accuracy_drop
    return GateCheck(
        metric="heldout_accuracy",
        value=e.heldout_accuracy,
        serving=e.serving_heldout_accuracy,
        limit=limit,
        passed=e.heldout_accuracy >= limit,
        note=f"at least the serving version's minus {config.gate_max_accuracy_drop}",
    )


def _perplexity(e: EvalMetrics, config: GateConfig) -> GateCheck:
    limit = e.serving_perplexity * (1 + config.gate_max_perplexity_rise)
    return GateCheck(
        metric="perplexity",
        value=e.perplexity,
        serving=e.serving_perplexity,
        limit=limit,
        passed=e.perplexity <= limit,
        note=f"at most {config.gate_max_perplexity_rise:.0%} above the serving version's",
    )


def heldout_support(e: EvalMetrics, config: GateConfig) -> str | None:
    """How the held-out clinician data supports the change, or None when it does not.

    It does when the new version makes the held-out edited answers more likely than the serving
    version does, or ranks the held-out pairs better (once there are ``gate_min_pairs``).
    """
    if e.edit_logprob is not None and e.serving_edit_logprob is not None and e.edit_logprob > e.serving_edit_logprob:
        return f"held-out edits {e.edit_logprob - e.serving_edit_logprob:+.3g} nats/token"
    if (
        e.heldout_pairs >= config.gate_min_pairs
        and e.heldout_accuracy is not None
        and e.serving_heldout_accuracy is not None
        and e.heldout_accuracy > e.serving_heldout_accuracy
    ):
        return f"held-out pairs {e.serving_heldout_accuracy:.2f} -> {e.heldout_accuracy:.2f}"
    return None


def _kl(e: EvalMetrics, config: GateConfig) -> GateCheck:
    within = e.kl_base <= config.gate_kl_budget
    support = None if within else heldout_support(e, config)
    note = "KL(new || base), nats per token"
    if support:
        note += f"; beyond the budget, but the change is what held-out clinicians asked for ({support})"
    return GateCheck(
        metric="kl_base",
        value=e.kl_base,
        limit=config.gate_kl_budget,
        passed=within or support is not None,
        note=note,
    )


def _answers(e: EvalMetrics, config: GateConfig) -> list[GateCheck]:
    """The form and fluency of the new version's own answers to shipped questions, against the serving version's."""
    checks = []
    if e.loop_rate is not None and e.serving_loop_rate is not None:
        limit = e.serving_loop_rate + config.gate_max_loop_rise
        checks.append(GateCheck(metric="loop_rate", value=e.loop_rate, serving=e.serving_loop_rate, limit=limit,
                                passed=e.loop_rate <= limit + _EPS,
                                note=f"answers caught in a repeated loop; at most {config.gate_max_loop_rise} above the serving version's"))
    if e.finished_rate is not None and e.serving_finished_rate is not None:
        limit = e.serving_finished_rate - config.gate_max_unfinished_rise
        checks.append(GateCheck(metric="finished_rate", value=e.finished_rate, serving=e.serving_finished_rate, limit=limit,
                                passed=e.finished_rate >= limit - _EPS,
                                note=f"answers that end before the token limit; at most {config.gate_max_unfinished_rise} below the serving version's"))
    if e.unclear_rate is not None and e.serving_unclear_rate is not None:
        limit = e.serving_unclear_rate + config.gate_max_unclear_rise
        checks.append(GateCheck(metric="unclear_rate", value=e.unclear_rate, serving=e.serving_unclear_rate, limit=limit,
                                passed=e.unclear_rate <= limit + _EPS,
                                note=f"answers that do not read as clinical text to the base model; at most {config.gate_max_unclear_rise} above the serving version's"))
    return checks


def _logprob(e: EvalMetrics, config: GateConfig) -> GateCheck:
    if e.edit_logprob is not None and e.serving_edit_logprob is not None:
        metric, value, serving = "edit_logprob", e.edit_logprob, e.serving_edit_logprob
    else:
        metric, value, serving = "reference_logprob", e.reference_logprob, e.serving_reference_logprob
    if value is None or serving is None:
        return GateCheck(metric=metric, value=value, serving=serving, passed=True, note="not measured")
    limit = serving - config.gate_max_logprob_drop
    return GateCheck(
        metric=metric,
        value=value,
        serving=serving,
        limit=limit,
        passed=value >= limit,
        note=f"nats per token; at most {config.gate_max_logprob_drop} below the serving version's",
    )


def _safety(e: EvalMetrics, config: GateConfig) -> list[GateCheck]:
    tol = config.gate_max_safety_drop
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


def _reward_length(e: EvalMetrics) -> list[GateCheck]:
    """A reward gain that length alone explains is reward hacking, not a better answer."""
    r = e.reward
    if r is None or r.mean_reward is None:
        return []
    return [GateCheck(metric="reward_length_adjusted_gain", value=r.length_adjusted_gain, serving=None, limit=0.0,
                      passed=not gained_by_length_only(r),
                      note=f"reward (learned proxy) {r.serving_mean_reward:.3f} -> {r.mean_reward:.3f} with answers "
                           f"{r.serving_mean_tokens:.0f} -> {r.mean_tokens:.0f} tokens; held back when less than "
                           f"{LENGTH_ONLY_SHARE:.0%} of the gain is left once length's effect is taken out")]  # fmt: skip


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
