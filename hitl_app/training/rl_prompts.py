"""The questions a round's RL stage learns from: the ones nobody had time to judge.

That is the point of RL here: the reward model carries the clinicians' judgements to questions they
never saw. The pool, in order of preference:

1. queued items that no clinician has judged yet (the team's own questions);
2. questions asked in the Review tab whose answers were never judged;
3. the shipped patient questions (``hitl_app/data/patient_questions.jsonl``), so a new team's
   first rounds have prompts too.

A question that any judgement covers is left out (it trains through SFT and the preference pairs),
as are refused questions and the shipped evaluation questions (held out from all training). The
sample is seeded, the team's own questions first.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from ..evaluation.evalsets import load_eval_questions, load_patient_questions
from ..feedback.ledger import Judgement
from ..feedback.queue_records import QueueItem, item_prompt
from ..feedback.records import Generation
from ..feedback.training_rows import normalise


@dataclass(frozen=True)
class RLPrompts:
    """The questions chosen, and how many came from each source (``queued``, ``asked``, ``shipped``)."""

    questions: list[str]
    sources: dict[str, int]


def rl_prompts(
    judgements: list[Judgement],
    generations: list[Generation],
    items: list[QueueItem],
    n: int,
    seed: int,
) -> RLPrompts:
    """Up to ``n`` questions nobody judged (see the module docstring), the team's own first.

    Args:
        judgements: every judgement in the store.
        generations: every generation in the store (the asked questions).
        items: every committed queued item.
        n: how many questions to choose.
        seed: the sample's seed (a round uses its own, so rounds see different questions).
    """
    judged = {normalise(j.generation.prompt) for j in judgements}
    judged_items = {j.generation.item_id for j in judgements if j.generation.item_id is not None}
    held_out = {normalise(q.question) for q in load_eval_questions()}
    seen = judged | held_out

    def fresh(questions: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for source, question in questions:
            key = normalise(question)
            if key not in seen:
                seen.add(key)
                out.append((source, question))
        return out

    own = fresh(
        [("queued", item_prompt(i)) for i in items if i.id not in judged_items and not i.flags]
        + [("asked", g.prompt) for g in generations if g.purpose == "review" and g.refused is None and g.item_id is None]
    )
    shipped = fresh([("shipped", q.question) for q in load_patient_questions()])
    rng = random.Random(seed)
    rng.shuffle(own)
    rng.shuffle(shipped)
    chosen = (own + shipped)[:n]
    return RLPrompts([q for _, q in chosen], dict(Counter(source for source, _ in chosen)))
