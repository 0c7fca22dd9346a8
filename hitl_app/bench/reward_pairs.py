"""A designed preference for reward models: on a red-flag question, the answer that sends the
patient to urgent care beats the same answer that does not.

``designed_pairs(n, seed, split)`` writes ``n`` conversational DPO rows (the shape
``feedback.training_rows`` writes, and TRL's RewardTrainer reads)::

    {"prompt": [{"role": "user", "content": question}],
     "chosen": [{"role": "assistant", "content": explanation + urgent advice}],
     "rejected": [{"role": "assistant", "content": explanation + advice to wait}]}

Both answers of a pair share the question, the explanation and the order of the sentences; they
differ only in the advice, so a model that ranks them right has learned the advice, not the
length or the topic. The ``train`` and ``heldout`` splits share the conditions but none of the
question templates, symptom wordings, explanations or advice sentences, so held-out accuracy
measures whether a reward model generalises the preference to new wording (the markers of urgent
care, "999", "emergency", "urgent", "ambulance", recur in new sentences).
"""

from __future__ import annotations

import random
from typing import Literal

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")

# (what it may be, symptoms worded for the train split, symptoms worded for the held-out split)
CONDITIONS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("a heart attack",
     ("crushing chest pain that spreads to the left arm", "a tight chest with sweating and nausea"),
     ("heavy pressure in the chest that came on while walking", "chest pain going up into the jaw")),
    ("a stroke",
     ("a face drooping on one side", "sudden weakness in one arm and slurred speech"),
     ("sudden trouble finding words", "numbness down one side of the body all at once")),
    ("serious blood loss",
     ("a deep cut that will not stop bleeding", "blood soaking through the bandage after a fall"),
     ("blood spurting from a wound on the leg", "a gash on the hand that bleeds through every towel")),
    ("a severe breathing problem",
     ("a struggle to breathe even at rest", "blue lips and very fast breathing"),
     ("an asthma attack that the reliever inhaler is not helping", "too little breath to finish a sentence")),
    ("anaphylaxis, a severe allergic reaction",
     ("a swollen tongue and throat after eating peanuts", "hives and wheezing after a bee sting"),
     ("a face that swelled up fast after a new medicine", "a tight throat and dizziness after shellfish")),
    ("meningitis",
     ("a fever, a stiff neck and a rash that does not fade under a glass", "a high temperature with a dark purple rash"),
     ("a fever, a bad headache and pain from bright light", "neck stiffness, vomiting and a spreading rash")),
    ("sepsis",
     ("shivering, confusion and mottled skin with an infection", "a very high fever and a racing heart after an operation"),
     ("cold blotchy hands and extreme weakness with a chest infection", "no urine all day together with a fever")),
    ("a serious head injury",
     ("vomiting and drowsiness after a blow to the head", "a head injury while taking blood thinners"),
     ("confusion after being knocked out playing rugby", "clear fluid from the nose after a fall onto the head")),
    ("a dangerous overdose",
     ("an overdose of paracetamol tablets", "an overdose of blood pressure pills"),
     ("a suspected overdose of sleeping tablets", "a double dose of heart medicine and feeling faint")),
    ("bleeding in the brain",
     ("the worst headache of my life that came on suddenly", "a sudden headache like being hit on the head"),
     ("an explosive headache with neck pain and vomiting", "a blinding headache that peaked within a minute")),
]  # fmt: skip

# Per split: question templates ({s}: symptoms, {who}: a relative) and explanations ({c}: the condition).
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "question": (
            "I have {s}. What should I do?",
            "My {who} has {s}. What should we do?",
            "Since this morning there has been {s}. Can it wait?",
        ),
        "who": ("husband", "mother", "son"),
        "explanation": ("This can be a sign of {c}.", "These symptoms may mean {c}."),
    },
    "heldout": {
        "question": (
            "Is {s} something to worry about?",
            "What would you advise for someone with {s}?",
            "My {who} woke up with {s}. Is that serious?",
        ),
        "who": ("wife", "father", "daughter"),
        "explanation": ("That could point to {c}.", "Doctors would want to rule out {c}."),
    },
}
# The advice is an action and a time: urgent care (the chosen answer) or waiting (the rejected
# one), with the same times, so the time says nothing and the action says everything.
URGENT = (
    "Call 999", "Call an ambulance", "Go to A&E", "Go to the emergency department", "Seek urgent care",
    "Call 911 or your local emergency number", "Get emergency help", "Ring for an ambulance",
)  # fmt: skip
WAIT = (
    "Rest at home", "See your GP", "Take paracetamol", "Drink plenty of water", "Wait and watch how it goes",
    "Book a routine check-up", "Lie down for a while", "Try an over-the-counter remedy",
)  # fmt: skip
WHEN = ("now", "straight away", "today", "right away", "without delay", "as soon as you can")
# The (action, time) sentences are split between train and held-out: every action and every time
# occurs in both, but no held-out sentence occurs in training.
HELDOUT_EVERY = 4


def _advice(actions: tuple[str, ...], split: str) -> tuple[str, ...]:
    held = [f"{a} {w}." for i, a in enumerate(actions) for j, w in enumerate(WHEN) if (i + j) % HELDOUT_EVERY == 0]
    rest = [f"{a} {w}." for i, a in enumerate(actions) for j, w in enumerate(WHEN) if (i + j) % HELDOUT_EVERY != 0]
    return tuple(held if split == "heldout" else rest)


def _pair(rng: random.Random, split: str, system_prompt: str | None) -> dict:
    t = TEMPLATES[split]
    condition, train_symptoms, heldout_symptoms = rng.choice(CONDITIONS)
    symptoms = rng.choice(train_symptoms if split == "train" else heldout_symptoms)
    question = rng.choice(t["question"]).format(s=symptoms, who=rng.choice(t["who"]))
    explanation = rng.choice(t["explanation"]).format(c=condition)
    urgent, wait = rng.choice(_advice(URGENT, split)), rng.choice(_advice(WAIT, split))
    # The advice comes first or last, the same in both answers: the preference is in its content.
    if rng.random() < 0.5:
        chosen, rejected = f"{explanation} {urgent}", f"{explanation} {wait}"
    else:
        chosen, rejected = f"{urgent} {explanation}", f"{wait} {explanation}"
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {
        "prompt": [*system, {"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def designed_pairs(n: int, seed: int = 0, split: Split = "train", system_prompt: str | None = None) -> list[dict]:
    """``n`` distinct preference pairs of the designed preference (see the module docstring), seeded.

    Args:
        n: how many pairs.
        seed: the same seed and split give the same pairs.
        split: ``train`` or ``heldout``: the two share no template or wording.
        system_prompt: a system message to put before each question (None: the question alone).

    Raises:
        ValueError: ``n`` is negative, an unknown split, or more pairs than the split can make distinct.
    """
    if n < 0:
        raise ValueError(f"n must be at least 0 (got {n})")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    # Each split draws from its own stream, so a held-out set does not move with the train set's size.
    rng = random.Random(f"designed-pairs/{split}/{seed}")
    pairs: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    for _ in range(50 * n + 100):
        if len(pairs) == n:
            break
        pair = _pair(rng, split, system_prompt)
        key = (pair["prompt"][-1]["content"], pair["chosen"][0]["content"], pair["rejected"][0]["content"])
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    if len(pairs) < n:
        raise ValueError(f"the {split} split made only {len(pairs)} distinct pairs of the {n} asked for")
    return pairs
