"""``python -m hitl_app.core.config_docs``: the configuration reference (``docs/configuration.md``), from ``Settings``.

``--check`` exits 1 when the file differs from what ``Settings`` says, so the reference cannot
drift from ``python main.py --help`` (``tests/test_config_docs.py`` runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal, Sequence, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import Settings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Every setting belongs to exactly one section; a new setting must be placed here (a test checks).
SECTIONS: dict[str, tuple[str, ...]] = {
    "The loop": ("retrain_threshold", "auto_retrain", "replay_size", "holdout_fraction", "seed"),
    "Access": ("host", "port", "share", "auth", "auth_file"),
    "Model and serving": (
        "base_model", "load_in_4bit", "device", "max_new_tokens", "temperature", "top_p", "system_prompt",
        "candidates", "best_of", "max_batch", "serve_threads", "serve_dtype", "compile_decode",
    ),
    "Data": ("feedback_dir", "checkpoints_dir", "redact_phi"),
    "Team review": ("reviews_per_item", "consensus_threshold", "rubric", "pregenerate", "uncertain_first"),
    "Training": (
        "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "learning_rate", "num_epochs",
        "sft_loss_floor", "preference_epochs", "preference_learning_rate", "train_batch_size", "max_seq_length",
        "train_method", "beta", "reward_model", "reward_epochs", "reward_learning_rate", "rl_prompts", "rl_generations",
        "rl_max_new_tokens", "rl_beta", "rl_learning_rate", "trainer_threads", "round_budget_s",
    ),
    "Beyond one machine": (
        "serve_backend", "vllm_url", "vllm_max_loaded", "vllm_python", "vllm_args", "train_launcher",
        "train_processes", "accelerate_config",
    ),
    "Evaluation and the promotion gate": (
        "gate", "gate_max_accuracy_drop", "gate_min_pairs", "gate_max_perplexity_rise", "gate_kl_budget",
        "gate_max_logprob_drop", "gate_max_loop_rise", "gate_max_unfinished_rise", "gate_max_unclear_rise",
        "eval_probe_prompts", "redteam_prompts", "gate_max_safety_drop",
    ),
    "Console": ("log_level",),
}  # fmt: skip

HEADER = """\
# Configuration

Every setting of `python main.py`, generated from `hitl_app/core/config.py` by
`python -m hitl_app.core.config_docs` (do not edit by hand). Each flag is also an environment variable:
`--retrain-threshold 10` is `HITL_RETRAIN_THRESHOLD=10`, `--no-auto-retrain` is
`HITL_AUTO_RETRAIN=false`; a list is JSON in the environment (`HITL_AUTH='["a:pw:admin"]'`),
and a repeated or comma-separated flag on the command line. Invalid combinations stop before anything loads, with one message that
lists every problem. `python main.py --help` prints the same.
"""


def flag(name: str, field: FieldInfo) -> str:
    """The command-line spelling of a setting: ``--kebab-name``, with ``--no-`` for a switch."""
    kebab = name.replace("_", "-")
    return f"`--{kebab}` / `--no-{kebab}`" if field.annotation is bool else f"`--{kebab}`"


def default_text(field: FieldInfo) -> str:
    """The default as a reader would type it."""
    value: Any = field.get_default(call_default_factory=True) if field.default is PydanticUndefined else field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def meaning(field: FieldInfo) -> str:
    """The description, with the accepted values of a choice."""
    text = field.description or ""
    if get_origin(field.annotation) is Literal:
        text += f" One of: {', '.join(map(str, get_args(field.annotation)))}."
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole reference page.

    Raises:
        ValueError: a setting is in no section, in two, or a section names an unknown setting.
    """
    fields = Settings.model_fields
    placed = [name for names in SECTIONS.values() for name in names]
    missing = sorted(set(fields) - set(placed))
    unknown = sorted(set(placed) - set(fields))
    twice = sorted({n for n in placed if placed.count(n) > 1})
    if missing or unknown or twice:
        raise ValueError(f"config_docs.SECTIONS is out of date: missing {missing}, unknown {unknown}, twice {twice}")
    lines = [HEADER]
    for title, names in SECTIONS.items():
        lines += [f"## {title}", "", "| Flag | Default | Meaning |", "|---|---|---|"]
        for name in names:
            field = fields[name]
            lines.append(f"| {flag(name, field)} | `{_cell(default_text(field))}` | {_cell(meaning(field))} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference (default ``docs/configuration.md``), or with ``--check`` compare it."""
    parser = argparse.ArgumentParser(prog="python -m hitl_app.core.config_docs", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOC_PATH, help=f"the file to write or check (default {DOC_PATH})")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the settings")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m hitl_app.core.config_docs", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
