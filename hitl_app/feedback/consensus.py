"""Consensus of several reviewers' judgements of one generation (team review).

Each queued item gets one generation, judged independently by k reviewers. This module combines
their judgements; it is pure (no store, no I/O). Adjudications (``Feedback.settles``) are the
caller's to remove beforehand.

Semantics:

* Each reviewer counts once per kind. Feedback is taken in ``created_at`` order (equal times keep
  their input order, later wins). A reviewer's *ranking* is their latest ``rank`` or ``vote``
  (a vote is a ranking). Their *label* of candidate c is their latest ``accept``/``edit``/
  ``reject`` of c, unless their latest ranking is ``[]`` (all unacceptable) and came later: that
  ranking labels every candidate ``reject``. A later non-empty ranking withdraws an earlier
  ``[]``, with its rejections, since it replaces that ranking judgement.
* Labels: ``accept`` is accept; ``reject`` and ``edit`` are reject (an edit says the original
  needed changing; the caller keeps every edit for training separately).
* A candidate's label support is the majority count over the labels on it. The label is agreed
  when that share is >= threshold; an exact split has no majority and is never agreed.
* Non-empty rankings are merged with ``ranked_pairs``. Their support is the share of all
  reviewers' strictly ordered pairs (a in an earlier tie group than b) that the merged ranking
  also puts a above b; 1.0 when no ranking orders any pair (all ties). Agreed when >= threshold.
* Status: ``empty`` without judgements, ``resolved`` when every labelled candidate and the
  ranking (if any) are agreed, ``disputed`` otherwise. A single reviewer always resolves to their
  own judgement (every support is 1.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .records import RANKED_ACTIONS, Feedback

Ranking = list[list[int]]  # tie groups of candidate indices, best first
Label = Literal["accept", "reject"]
ACCEPT: Label = "accept"
REJECT: Label = "reject"


def check_threshold(threshold: float) -> None:
    """Refuse an agreement threshold outside (0, 1].

    Raises:
        ValueError: the threshold is not in (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the agreement threshold must be in (0, 1], not {threshold}")


def _check_candidates(candidates: int) -> None:
    if candidates < 1:
        raise ValueError(f"a generation has at least one candidate, not {candidates}")


def _check_index(index: int, candidates: int) -> None:
    if not 0 <= index < candidates:
        raise ValueError(f"candidate index {index} is out of range: the generation has candidates 0..{candidates - 1}")


def _check_ranking(ranking: Ranking, candidates: int) -> None:
    flat = [index for group in ranking for index in group]
    for index in flat:
        _check_index(index, candidates)
    if len(flat) != len(set(flat)):
        raise ValueError(f"a candidate appears more than once in the ranking {ranking}")
    if not all(ranking):
        raise ValueError(f"the ranking {ranking} has an empty tie group")


def _ordered_pairs(ranking: Ranking) -> Iterable[tuple[int, int]]:
    """Every (a, b) with a in an earlier tie group than b: the pairs the ranking orders."""
    above: list[int] = []
    for group in ranking:
        for b in group:
            for a in above:
                yield a, b
        above.extend(group)  # only after the group: members of a tie are not ordered


def ranked_pairs(rankings: list[Ranking], candidates: int) -> Ranking:
    """Merge several rankings with Tideman's ranked pairs (winning votes), as OpenAssistant does.

    For each ordered pair (a, b), wins[a][b] counts the rankings that put a above b; a ranking
    that does not name both compares neither. A pair is a majority when wins[a][b] > wins[b][a].
    Majorities are locked strongest first: by wins[a][b] descending, then wins[b][a] ascending,
    then (a, b) ascending, skipping any that would close a cycle with those already locked.

    Ties: a candidate's depth is the length of the longest chain of locked wins above it (0 when
    nothing beats it). The result groups the named candidates by depth, shallowest first, each
    group in ascending index order. Two candidates in a group have no locked path between them,
    so neither is above the other. A single ranking (or identical ones) comes back with the same
    tie groups; a candidate no ranking names is left out.

    Args:
        rankings: each reviewer's ranking, tie groups best first; empty rankings compare nothing.
        candidates: how many candidates the generation has.

    Returns:
        The merged ranking as tie groups, best first; ``[]`` when no ranking names a candidate.

    Raises:
        ValueError: ``candidates`` is below 1, or a ranking has an index out of range, a
            repeated index or an empty tie group.
    """
    _check_candidates(candidates)
    wins = [[0] * candidates for _ in range(candidates)]
    named: set[int] = set()
    for ranking in rankings:
        _check_ranking(ranking, candidates)
        for a, b in _ordered_pairs(ranking):
            wins[a][b] += 1
        named.update(i for group in ranking for i in group)

    majorities = [(a, b) for a in range(candidates) for b in range(candidates) if wins[a][b] > wins[b][a]]
    majorities.sort(key=lambda p: (-wins[p[0]][p[1]], wins[p[1]][p[0]], p[0], p[1]))
    beats: dict[int, set[int]] = {i: set() for i in range(candidates)}
    for a, b in majorities:
        if not _reaches(beats, b, a):  # locking a > b would close a cycle if b already reaches a
            beats[a].add(b)

    beaten_by = {b: {a for a in range(candidates) if b in beats[a]} for b in range(candidates)}
    depth: dict[int, int] = {}
    groups: dict[int, list[int]] = {}
    for i in sorted(named):
        groups.setdefault(_depth(i, beaten_by, depth), []).append(i)
    return [groups[d] for d in sorted(groups)]


def _reaches(beats: dict[int, set[int]], start: int, target: int) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == target:
            return True
        stack.extend(beats[node] - seen)
        seen |= beats[node]
    return False


def _depth(node: int, beaten_by: dict[int, set[int]], memo: dict[int, int]) -> int:
    # The locked graph is acyclic and has at most `candidates` nodes, so recursion is shallow.
    if node not in memo:
        memo[node] = 1 + max((_depth(a, beaten_by, memo) for a in beaten_by[node]), default=-1)
    return memo[node]


@dataclass(frozen=True)
class Judgements:
    """Each reviewer's standing judgements of one generation: one label per candidate, one ranking.

    Attributes:
        labels: (reviewer, candidate) -> "accept" or "reject".
        rankings: reviewer -> their latest ranking, when it is non-empty.
        reviewers: the distinct reviewers, sorted.
        edits: how many ``edit`` records there were (every one, superseded or not).
    """

    labels: dict[tuple[str, int], Label]
    rankings: dict[str, Ranking]
    reviewers: tuple[str, ...]
    edits: int


def latest_judgements(feedbacks: list[Feedback], candidates: int) -> Judgements:
    """Each reviewer's latest label per candidate and latest ranking (see the module docstring).

    Args:
        feedbacks: the judgements of one generation, adjudications removed.
        candidates: how many candidates the generation has.

    Raises:
        ValueError: ``candidates`` is below 1, or a judgement names a candidate out of range.
    """
    _check_candidates(candidates)
    # Positions in time order stand for the times: equal timestamps keep their input order.
    labelled: dict[tuple[str, int], tuple[int, Label]] = {}
    ranked: dict[str, tuple[int, Ranking]] = {}
    edits = 0
    for pos, fb in enumerate(sorted(feedbacks, key=attrgetter("created_at"))):
        if fb.action in RANKED_ACTIONS:
            ranking = fb.ranking or []
            _check_ranking(ranking, candidates)
            ranked[fb.reviewer] = (pos, ranking)
        else:
            _check_index(fb.candidate, candidates)
            labelled[(fb.reviewer, fb.candidate)] = (pos, ACCEPT if fb.action == "accept" else REJECT)
            edits += fb.action == "edit"
    for reviewer, (pos, ranking) in ranked.items():
        if ranking:
            continue
        for c in range(candidates):  # all unacceptable: a rejection of each, unless relabelled since
            if labelled.get((reviewer, c), (-1, REJECT))[0] < pos:
                labelled[(reviewer, c)] = (pos, REJECT)
    return Judgements(
        labels={key: label for key, (_, label) in labelled.items()},
        rankings={r: ranking for r, (_, ranking) in sorted(ranked.items()) if ranking},
        reviewers=tuple(sorted({fb.reviewer for fb in feedbacks})),
        edits=edits,
    )


@dataclass(frozen=True)
class LabelConsensus:
    """The majority label of each labelled candidate.

    Attributes:
        labels: candidate -> the agreed label (only candidates whose support reached the threshold).
        support: candidate -> majority count / labels on it, for every labelled candidate.
    """

    labels: dict[int, Label]
    support: dict[int, float]


def label_consensus(judgements: Judgements, threshold: float) -> LabelConsensus:
    """Majority accept/reject per candidate, agreed when its share reaches ``threshold``.

    Args:
        judgements: the standing judgements, from ``latest_judgements``.
        threshold: the share in (0, 1] a majority needs to be agreed.

    Raises:
        ValueError: the threshold is not in (0, 1].
    """
    check_threshold(threshold)
    counts: dict[int, list[int]] = {}
    for (_, candidate), label in judgements.labels.items():
        counts.setdefault(candidate, [0, 0])[label == ACCEPT] += 1
    labels: dict[int, Label] = {}
    support: dict[int, float] = {}
    for candidate in sorted(counts):
        rejects, accepts = counts[candidate]
        support[candidate] = max(accepts, rejects) / (accepts + rejects)
        if accepts != rejects and support[candidate] >= threshold:
            labels[candidate] = ACCEPT if accepts > rejects else REJECT
    return LabelConsensus(labels=labels, support=support)


def _ranking_support(rankings: list[Ranking], merged: Ranking) -> float:
    """The share of the rankings' ordered pairs that ``merged`` (naming all they name) keeps; 1.0 if none."""
    depth = {i: d for d, group in enumerate(merged) for i in group}
    total = agree = 0
    for ranking in rankings:
        for a, b in _ordered_pairs(ranking):
            total += 1
            agree += a in depth and b in depth and depth[a] < depth[b]
    return agree / total if total else 1.0


class Resolution(BaseModel):
    """What k reviewers' judgements of one generation agree on (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["resolved", "disputed", "empty"]
    labels: dict[int, Label]
    label_support: dict[int, float]
    ranking: Ranking | None
    ranking_support: float | None
    reviewers: int
    support: float | None
    edits: int


def resolve(feedbacks: list[Feedback], candidates: int, threshold: float) -> Resolution:
    """Combine reviewers' judgements of one generation into a consensus.

    Args:
        feedbacks: the judgements of the generation, adjudications removed.
        candidates: how many candidates the generation has.
        threshold: the share in (0, 1] of agreeing judgements a label or ranking needs.

    Returns:
        The resolution: agreed labels, merged ranking, their supports and the status.

    Raises:
        ValueError: the threshold is not in (0, 1], ``candidates`` is below 1, or a judgement
            names a candidate out of range.
    """
    check_threshold(threshold)
    judgements = latest_judgements(feedbacks, candidates)
    consensus = label_consensus(judgements, threshold)
    rankings = list(judgements.rankings.values())
    merged = ranked_pairs(rankings, candidates) if rankings else None
    rank_support = _ranking_support(rankings, merged) if merged is not None else None

    supports = list(consensus.support.values()) + ([rank_support] if rank_support is not None else [])
    if not supports:
        status: Literal["resolved", "disputed", "empty"] = "empty"
    elif len(consensus.labels) == len(consensus.support) and (rank_support is None or rank_support >= threshold):
        status = "resolved"
    else:
        status = "disputed"
    return Resolution(
        status=status,
        labels=consensus.labels,
        label_support=consensus.support,
        ranking=merged,
        ranking_support=rank_support,
        reviewers=len(judgements.reviewers),
        support=min(supports) if supports else None,
        edits=judgements.edits,
    )
