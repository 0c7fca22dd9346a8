"""Text and cells the UI shows: the version badge, candidate labels, table cells, the status panel,
the queue's progress line, and user text made literal in Markdown."""

from __future__ import annotations

from ..service.team_views import ProgressView
from ..service.views import BackendState, FastPathState, ServiceStatus


def badge(version: str) -> str:
    """The Review tab's line naming the serving version."""
    return f"**Model version:** `{version}`"


def candidate_label(i: int, version: str, rewards: list[float] | None = None) -> str:
    """The label of candidate ``i`` (0-based) written by ``version``, with its reward-model score
    when there is one (labelled as the model's estimate, so it is not read as a colleague's vote)."""
    label = f"Candidate {i + 1} · {version}"
    if rewards is not None and i < len(rewards):
        label += f" · reward model {rewards[i]:+.2f}"
    return label


def cell(value: object) -> str | float | int | bool:
    """A table cell: blank for a missing figure, floats to 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value  # type: ignore[return-value]


def progress_html(fraction: float) -> str:
    """The status panel's training progress: a native progress bar with its percentage."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return (
        f'<label>Training progress <progress max="100" value="{percent}" style="width:100%">{percent}%</progress> '
        f"{percent}%</label>"
    )


def decoding_line(fast: FastPathState | None) -> str:
    """The status panel's line on how answers are decoded, from ``/status``'s ``fast_path``."""
    if fast is None:
        return "**Decoding:** the float32 PEFT model"
    text = f"**Decoding:** {fast.dtype} merged copy"
    compiled = fast.compiled
    if compiled is None:
        return text + ", uncompiled"
    if compiled.error:
        return text + f", uncompiled (compiling failed: {compiled.error})"
    ready = ", ".join(f"{bucket} tokens x {rows}" for bucket, rows in compiled.ready)
    text += f", compiled for {ready} (cache x answers)" if ready else ", uncompiled until compiling is done"
    return text + (" (compiling {} x {})".format(*compiled.compiling) if compiled.compiling else "")


def status_markdown(s: ServiceStatus) -> str:
    """The status panel's text: serving version, feedback, next retrain, trainer, store and decoding."""
    t = s.trainer
    lines = [
        f"**Serving:** `{s.serving_version}`",
        f"**Feedback:** {s.feedback_total} judgements ({s.since_last_version} since the last version)",
        f"**Next retrain:** in {s.until_next_retrain} judgement(s)" + ("" if s.auto_retrain else " (auto-retrain off)"),
        f"**Trainer:** {t.state}" + (f" — {t.message}" if t.message else ""),
    ]
    if t.state == "failed" and t.last_error:
        lines.append(f"**Last error:** {t.last_error}")
    if s.corrupt_lines:
        lines.append(f"**Store:** {s.corrupt_lines} corrupt line(s) skipped (see the log)")
    lines.append(decoding_line(s.fast_path) if s.vllm is None else vllm_line(s.vllm))
    return "\n\n".join(lines)


def vllm_line(v: BackendState) -> str:
    """The status panel's line on the vLLM backend: where, what is loaded, and a failed load."""
    text = f"**Decoding:** vLLM at {v.url}" + ("" if v.started_here else " (run by an operator)")
    text += f", {len(v.loaded)} of at most {v.max_loaded} version(s) loaded" + (f" ({', '.join(v.loaded)})" if v.loaded else "")
    if v.last_swap_ms is not None:
        text += f"; last publish took {v.last_swap_ms} ms"
    if v.load_failure is not None:
        text += f"\n\n**vLLM could not load {v.load_failure.version}:** {v.load_failure.error}"
    return text


# Characters Markdown gives a meaning to: text from users and imported files is shown as typed.
_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|~>"})


def md_text(text: str) -> str:
    """``text`` as literal Markdown on one line: markup escaped, newlines as breaks (safe in a table cell)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").translate(_MARKDOWN_SPECIAL)
    return "<br>".join(escaped.splitlines())


def queue_progress_line(p: ProgressView) -> str:
    """The Review tab's line on the reviewer's progress through the team's queue."""
    return (
        f"**Queue:** {p.done} done, {p.skipped} skipped, {p.left} left of {p.queued} queued "
        f"· {p.reviews_per_item} review(s) per item"
    )
