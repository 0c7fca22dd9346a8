"""Parsing and checking a clinician's ranking of candidate answers.

A ranking orders candidate indices from best to worst. Ties are written as a nested list, so
``[2, [0, 1], 3]`` means: candidate 2 is best, 0 and 1 tie for second, 3 is worst. The string
form ``"2 > 0 = 1 > 3"`` says the same. An empty list (or ``"none"``) means every candidate is
unacceptable. A ranking must name every candidate exactly once.
"""

from __future__ import annotations

import re

from ..core.errors import UserError

Ranking = list[list[int]]  # tie groups, best first

ALL_UNACCEPTABLE = "none"


def parse_order(order: list | str, n_candidates: int) -> Ranking:
    """Normalise and check a ranking of ``n_candidates`` candidates.

    Args:
        order: a list of indices (ties as nested lists) or a string like ``"2 > 0 = 1"``; an
            empty list or ``"none"`` means all candidates are unacceptable.
        n_candidates: how many candidates the generation has.

    Returns:
        Tie groups, best first; ``[]`` for "all unacceptable".

    Raises:
        UserError: the generation has a single candidate, or the ranking has a duplicate index,
            an out-of-range index, a malformed entry, or does not name every candidate.
    """
    if n_candidates < 2:
        raise UserError("this generation has a single candidate; there is nothing to rank (accept, edit or reject it)")
    groups = _groups(order)
    if not groups:
        return []
    flat = [i for group in groups for i in group]
    seen: set[int] = set()
    for i in flat:
        if not 0 <= i < n_candidates:
            raise UserError(f"candidate index {i} is out of range: this generation has candidates 0..{n_candidates - 1}")
        if i in seen:
            raise UserError(f"candidate {i} appears more than once in the ranking")
        seen.add(i)
    if len(flat) != n_candidates:
        missing = sorted(set(range(n_candidates)) - seen)
        raise UserError(
            f"the ranking names {len(flat)} of {n_candidates} candidates; missing: {', '.join(map(str, missing))}"
        )
    return groups


def format_order(ranking: Ranking) -> str:
    """The string form of a ranking, e.g. ``"2 > 0 = 1"``; ``"none"`` for all unacceptable."""
    if not ranking:
        return ALL_UNACCEPTABLE
    return " > ".join(" = ".join(str(i) for i in group) for group in ranking)


def ranks_to_order(ranks: list[int]) -> Ranking:
    """Tie groups from per-candidate ranks (1 = best; equal ranks tie), as the UI collects them."""
    by_rank: dict[int, list[int]] = {}
    for candidate, rank in enumerate(ranks):
        by_rank.setdefault(int(rank), []).append(candidate)
    return [by_rank[r] for r in sorted(by_rank)]


def _groups(order: list | str) -> Ranking:
    if isinstance(order, str):
        text = order.strip().lower()
        if text in ("", ALL_UNACCEPTABLE):
            return []
        if not re.fullmatch(r"\d+(\s*[>=]\s*\d+)*", text):
            raise UserError(f"cannot read the ranking {order!r}: write indices best first, like '2 > 0 = 1'")
        return [[int(i) for i in part.split("=")] for part in text.split(">")]
    if not isinstance(order, list):
        raise UserError(f"a ranking is a list of candidate indices, not {type(order).__name__}")
    groups = []
    for entry in order:
        group = entry if isinstance(entry, list) else [entry]
        if not group or not all(isinstance(i, int) and not isinstance(i, bool) for i in group):
            raise UserError(f"cannot read ranking entry {entry!r}: use an index or a list of tied indices")
        groups.append(list(group))
    return groups
