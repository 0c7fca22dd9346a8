"""Pure functions that turn clinicians' judgements into training rows in TRL's formats.

Rows are conversational, so TRL applies the model's own chat template:

- SFT (prompt-completion; loss on the completion only):
  ``{"prompt": [system, user], "completion": [assistant]}``
- DPO (preference): ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}``
- KTO (unpaired label): ``{"prompt": [...], "completion": [assistant], "label": bool}``

| Judgement          | Rows                                                                   |
|--------------------|------------------------------------------------------------------------|
| accept             | SFT row; KTO desirable                                                 |
| edit               | SFT row on the edited text; DPO edited > original; KTO undesirable original |
| rank, A/B vote     | DPO pair for every strictly ordered pair of candidates                 |
| reject             | KTO undesirable                                                        |
| all unacceptable   | KTO undesirable for each candidate                                     |
| rubric ratings     | the rated candidate's KTO label: desirable at the best level on every rated axis, undesirable at the worst on any |

A pair whose two texts are identical after normalisation (case and whitespace) teaches nothing
and is dropped, and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..core.chat import Message, chat_prompt
from .holdout import is_held_out
from .ledger import Judgement
from .records import RANKED_ACTIONS, Generation
from .rubric import stored_kto_label



@dataclass
class JudgementRows:
    """The rows one judgement yields."""

    sft: list[dict] = field(default_factory=list)
    dpo: list[dict] = field(default_factory=list)
    kto: list[dict] = field(default_factory=list)
    dropped_pairs: int = 0

    @property
    def empty(self) -> bool:
        """Whether the judgement yields no row at all."""
        return not (self.sft or self.dpo or self.kto)


@dataclass
class TrainingRows:
    """Rows for one round, with the ids of the feedback records they came from.

    SFT rows are kept in two lists because the round weighs them differently: the new judgements'
    rows are what the round must teach, the replayed ones only keep earlier lessons in place.
    """

    sft_new: list[dict] = field(default_factory=list)
    sft_replay: list[dict] = field(default_factory=list)
    dpo: list[dict] = field(default_factory=list)
    kto: list[dict] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    new_record_ids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def sft(self) -> list[dict]:
        """Every SFT row of the round: the new judgements' first, then the replayed ones."""
        return self.sft_new + self.sft_replay


def prompt_messages(generation: Generation) -> list[Message]:
    """The chat messages the model saw when it produced ``generation``."""
    return chat_prompt(generation.prompt, generation.system_prompt)


def normalise(text: str) -> str:
    """Text compared for identity: case-folded, whitespace collapsed."""
    return " ".join(text.split()).casefold()


def _reply(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


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
    return {"prompt": prompt_messages(judgement.generation), "completion": _reply(target)}


def rows_for(judgement: Judgement) -> JudgementRows:
    """Every training row one judgement yields (see the table in the module docstring)."""
    fb, gen = judgement.feedback, judgement.generation
    prompt = prompt_messages(gen)
    out = JudgementRows()

    def pair(chosen: str, rejected: str) -> None:
        if normalise(chosen) == normalise(rejected):
            out.dropped_pairs += 1
        else:
            out.dpo.append({"prompt": prompt, "chosen": _reply(chosen), "rejected": _reply(rejected)})

    def label(text: str, desirable: bool) -> None:
        out.kto.append({"prompt": prompt, "completion": _reply(text), "label": desirable})

    if fb.action == "accept":
        answer = gen.candidates[fb.candidate]
        out.sft.append({"prompt": prompt, "completion": _reply(answer)})
        label(answer, True)
    elif fb.action == "edit":
        original = gen.candidates[fb.candidate]
        out.sft.append({"prompt": prompt, "completion": _reply(fb.text)})
        pair(fb.text, original)
        # An "edit" that only changed case or spacing does not make the original undesirable.
        if normalise(fb.text) != normalise(original):
            label(original, False)
    elif fb.action == "reject":
        label(gen.candidates[fb.candidate], False)
    elif fb.action in RANKED_ACTIONS:
        if fb.all_unacceptable:
            for candidate in gen.candidates:
                label(candidate, False)
        for better_rank, better in enumerate(fb.ranking or []):
            for worse in (fb.ranking or [])[better_rank + 1 :]:
                for b in better:
                    for w in worse:
                        pair(gen.candidates[b], gen.candidates[w])
    rated = stored_kto_label(fb.rubric)
    if rated is not None and fb.action not in RANKED_ACTIONS:
        # Rubric ratings are the finer judgement of the rated candidate: they set its KTO label.
        answer = gen.candidates[fb.candidate]
        out.kto = [row for row in out.kto if row["completion"][0]["content"] != answer]
        label(answer, rated)
    return out


def build_rows(
    new: list[Judgement], older: list[Judgement], replay_size: int, seed: int, holdout_fraction: float = 0.0
) -> TrainingRows:
    """Rows for one round: every new judgement plus a bounded, seeded replay sample of older ones.

    The replay keeps earlier lessons from being forgotten while each round stays O(new + replay)
    rather than O(all feedback). Held-out judgements (see ``holdout``) yield no rows, new or old;
    the new ones are still consumed and counted as ``held_out``.

    Args:
        new: judgements since the last published version.
        older: judgements already trained on by earlier versions.
        replay_size: at most this many older judgements are added.
        seed: seed of the replay sample, so a round can be reproduced.
        holdout_fraction: share of pair-yielding judgements kept for evaluation.
    """
    rows = TrainingRows()
    rows.counts["held_out"] = 0
    eligible_old = [j for j in older if not is_held_out(j, holdout_fraction) and not rows_for(j).empty]
    replay = random.Random(seed).sample(eligible_old, min(replay_size, len(eligible_old)))
    counts = rows.counts
    counts["dropped_identical_pairs"] = 0  # present even when no judgement is processed
    for source, judgements in (("new", new), ("replay", replay)):
        for j in judgements:
            kind = j.feedback.action
            counts[f"{source}_{kind}"] = counts.get(f"{source}_{kind}", 0) + 1
            if source == "new":
                rows.new_record_ids.append(j.feedback.id)
                if is_held_out(j, holdout_fraction):
                    counts["held_out"] += 1
                    continue
            made = rows_for(j)
            counts["dropped_identical_pairs"] = counts.get("dropped_identical_pairs", 0) + made.dropped_pairs
            if made.empty:
                continue
            (rows.sft_new if source == "new" else rows.sft_replay).extend(made.sft)
            rows.dpo.extend(made.dpo)
            rows.kto.extend(made.kto)
            rows.record_ids.append(j.feedback.id)
    counts["sft"] = len(rows.sft)
    counts["sft_replay"] = len(rows.sft_replay)
    counts["dpo"] = len(rows.dpo)
    counts["kto_desirable"] = sum(1 for r in rows.kto if r["label"])
    counts["kto_undesirable"] = sum(1 for r in rows.kto if not r["label"])
    return rows
