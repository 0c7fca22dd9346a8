"""Pure functions that turn clinicians' judgements into training rows in TRL's formats.

Rows are conversational prompt-completion records, so TRL applies the model's own chat template
and computes the loss on the completion only::

    {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "completion": [{"role": "assistant", "content": ...}]}
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .ledger import Judgement
from .schema import Generation

Message = dict[str, str]


@dataclass
class TrainingRows:
    """Rows for one round, with the ids of the feedback records they came from."""

    sft: list[dict] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    new_record_ids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def prompt_messages(generation: Generation) -> list[Message]:
    """The chat messages the model saw when it produced ``generation``."""
    messages = []
    if generation.system_prompt:
        messages.append({"role": "system", "content": generation.system_prompt})
    messages.append({"role": "user", "content": generation.prompt})
    return messages


def sft_target(judgement: Judgement) -> str | None:
    """The answer a judgement endorses: the accepted candidate, the edited text, or None."""
    fb = judgement.feedback
    if fb.action == "accept":
        return judgement.generation.candidates[fb.candidate]
    if fb.action == "edit":
        return fb.text
    return None


def sft_row(judgement: Judgement) -> dict | None:
    """A prompt-completion SFT row for an accepted or edited answer; None for other judgements."""
    target = sft_target(judgement)
    if target is None:
        return None
    return {
        "prompt": prompt_messages(judgement.generation),
        "completion": [{"role": "assistant", "content": target}],
    }


def build_rows(new: list[Judgement], older: list[Judgement], replay_size: int, seed: int) -> TrainingRows:
    """Rows for one round: every new judgement plus a bounded, seeded replay sample of older ones.

    The replay keeps earlier lessons from being forgotten while each round stays O(new + replay)
    rather than O(all feedback).

    Args:
        new: judgements since the last published version.
        older: judgements already trained on by earlier versions.
        replay_size: at most this many older judgements are added.
        seed: seed of the replay sample, so a round can be reproduced.
    """
    rows = TrainingRows()
    eligible_old = [j for j in older if sft_target(j) is not None]
    replay = random.Random(seed).sample(eligible_old, min(replay_size, len(eligible_old)))
    for source, judgements in (("new", new), ("replay", replay)):
        for j in judgements:
            row = sft_row(j)
            kind = j.feedback.action
            rows.counts[f"{source}_{kind}"] = rows.counts.get(f"{source}_{kind}", 0) + 1
            if source == "new":
                rows.new_record_ids.append(j.feedback.id)
            if row is not None:
                rows.sft.append(row)
                rows.record_ids.append(j.feedback.id)
    rows.counts["sft"] = len(rows.sft)
    return rows
