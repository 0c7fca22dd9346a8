"""Inter-reviewer agreement of team review: Krippendorff's alpha, Cohen's kappa, agreement with consensus.

Pure: the caller gathers each queued item's judgements (adjudications removed); nothing is read
or written here.

Units are (item, candidate). A reviewer's nominal value on a unit is their standing label of
the candidate (``consensus.latest_judgements``: accept, or reject for reject/edit/all
unacceptable); their ordinal value is the candidate's 1-based tie-group position in their latest
non-empty ranking (``[[2], [0, 1]]`` gives candidate 2 rank 1, candidates 0 and 1 rank 2).

Alpha uses only *pairable* units, those with values from at least 2 reviewers (units with one
value never enter Krippendorff's coincidences, so dropping them leaves alpha unchanged). It is
None when no unit is pairable, or when the pairable units hold a single value overall: the
expected disagreement is then 0 and alpha is 0/0 (``krippendorff`` raises or returns nan there).
The ``units_*`` and ``items_*`` figures count the pairable units, and the items with at least one.

Cohen's kappa is computed for each pair of reviewers over the units both labelled; it is None
when the expected agreement is 1 (both used one and the same label throughout). A reviewer's
agreement with consensus is the share of their labels, on candidates whose ``label_consensus``
(the same rule as ``consensus.resolve``) agreed a label, that equal it.

Arrays are built once as flat (reviewer, unit, value) triples and scattered into reviewers x
units matrices with numpy indexing; only the per-item label rules run in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import krippendorff
import numpy as np
from pydantic import BaseModel

from .consensus import check_threshold, label_consensus, latest_judgements
from .records import Feedback

NO_BATCH = "(none)"
# Nominal codes: krippendorff needs numbers; any two distinct ones give the same alpha.
_CODE = {"reject": 0.0, "accept": 1.0}


@dataclass(frozen=True)
class ItemJudgements:
    """The k reviewers' judgements of one queued item's generation.

    Attributes:
        item_id: the queued item.
        batch_id: the import batch it came from (None: no batch).
        candidates: how many candidates its generation has.
        feedbacks: the reviewers' judgements, adjudications removed.
    """

    item_id: str
    batch_id: str | None
    candidates: int
    feedbacks: list[Feedback]


class Figures(BaseModel):
    """Krippendorff's alpha of labels (nominal) and rank positions (ordinal), with what is behind each."""

    alpha_nominal: float | None
    alpha_ordinal: float | None
    items_nominal: int
    items_ordinal: int
    units_nominal: int
    units_ordinal: int


class PairKappa(BaseModel):
    """Cohen's kappa of two reviewers' labels on the units both labelled."""

    a: str
    b: str
    kappa: float | None
    units: int


class ReviewerFigures(BaseModel):
    """How often one reviewer's labels equal the agreed consensus label."""

    reviewer: str
    agreement_with_consensus: float | None
    units: int


class AgreementReport(BaseModel):
    """Agreement of the team, of each batch, of each pair of reviewers and of each reviewer."""

    team: Figures
    batches: dict[str, Figures]
    pairs: list[PairKappa]
    reviewers: list[ReviewerFigures]
    items: int
    judgements: int


@dataclass(frozen=True)
class _Values:
    """Flat (reviewer, unit, value) triples of one kind."""

    reviewer: np.ndarray
    unit: np.ndarray
    value: np.ndarray

    def where(self, keep: np.ndarray) -> _Values:
        return _Values(self.reviewer[keep], self.unit[keep], self.value[keep])


def agreement(items: list[ItemJudgements], threshold: float) -> AgreementReport:
    """Agreement figures of team review.

    Args:
        items: each queued item's judgements (items with none count nowhere).
        threshold: the share in (0, 1] a consensus label needs (as in ``consensus.resolve``).

    Returns:
        The report; every figure that is undefined for lack of data is None.

    Raises:
        ValueError: the threshold is not in (0, 1], or a judgement names a candidate out of range.
    """
    check_threshold(threshold)
    reviewer_index: dict[str, int] = {}
    nominal: tuple[list[int], list[int], list[float]] = ([], [], [])
    ordinal: tuple[list[int], list[int], list[float]] = ([], [], [])
    consensus_units: list[int] = []
    consensus_values: list[float] = []
    unit_item: list[int] = []  # unit -> item number, for the items_* counts
    unit_batch: list[int] = []  # unit -> batch number
    batch_index: dict[str, int] = {}
    judged = judgements = 0

    for item in items:
        if not item.feedbacks:
            continue
        standing = latest_judgements(item.feedbacks, item.candidates)
        base = len(unit_item)  # this item's units are base .. base + candidates - 1
        batch = batch_index.setdefault(item.batch_id if item.batch_id is not None else NO_BATCH, len(batch_index))
        unit_item.extend([judged] * item.candidates)
        unit_batch.extend([batch] * item.candidates)
        judged += 1
        judgements += len(item.feedbacks)
        for reviewer in standing.reviewers:
            reviewer_index.setdefault(reviewer, len(reviewer_index))
        for (reviewer, candidate), label in standing.labels.items():
            nominal[0].append(reviewer_index[reviewer])
            nominal[1].append(base + candidate)
            nominal[2].append(_CODE[label])
        for reviewer, ranking in standing.rankings.items():
            for position, group in enumerate(ranking, start=1):
                for candidate in group:
                    ordinal[0].append(reviewer_index[reviewer])
                    ordinal[1].append(base + candidate)
                    ordinal[2].append(float(position))
        for candidate, label in label_consensus(standing, threshold).labels.items():
            consensus_units.append(base + candidate)
            consensus_values.append(_CODE[label])

    units = len(unit_item)
    nom, ordi = _values(nominal), _values(ordinal)
    items_of, batch_of = np.asarray(unit_item, dtype=np.int64), np.asarray(unit_batch, dtype=np.int64)
    consensus = np.full(units, np.nan)
    consensus[np.asarray(consensus_units, dtype=np.int64)] = consensus_values
    names = sorted(reviewer_index, key=reviewer_index.__getitem__)  # index order

    batches = {
        name: _figures(nom.where(batch_of[nom.unit] == b), ordi.where(batch_of[ordi.unit] == b), len(names), items_of)
        for name, b in sorted(batch_index.items())
    }
    return AgreementReport(
        team=_figures(nom, ordi, len(names), items_of),
        batches=batches,
        pairs=_pairs(nom, names),
        reviewers=_with_consensus(nom, consensus, names),
        items=judged,
        judgements=judgements,
    )


def _values(triples: tuple[list[int], list[int], list[float]]) -> _Values:
    reviewer, unit, value = triples
    return _Values(np.asarray(reviewer, dtype=np.int64), np.asarray(unit, dtype=np.int64), np.asarray(value, dtype=float))


def _pairable(values: _Values, reviewers: int) -> tuple[np.ndarray, np.ndarray]:
    """The reviewers x pairable-units matrix (nan: no value), and the pairable units' numbers."""
    if not len(values.unit):
        return np.full((reviewers, 0), np.nan), np.zeros(0, dtype=np.int64)
    counts = np.bincount(values.unit)
    kept = np.flatnonzero(counts >= 2)
    column = np.full(len(counts), -1, dtype=np.int64)
    column[kept] = np.arange(len(kept))
    keep = column[values.unit] >= 0
    matrix = np.full((reviewers, len(kept)), np.nan)
    matrix[values.reviewer[keep], column[values.unit[keep]]] = values.value[keep]
    return matrix, kept


def _alpha(matrix: np.ndarray, level: str) -> float | None:
    # No pairable unit, or a single value among them: alpha is 0/0 (see the module docstring).
    present = matrix[~np.isnan(matrix)]
    if not present.size or np.unique(present).size < 2:
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def _figures(nom: _Values, ordi: _Values, reviewers: int, items_of: np.ndarray) -> Figures:
    nom_matrix, nom_units = _pairable(nom, reviewers)
    ord_matrix, ord_units = _pairable(ordi, reviewers)
    return Figures(
        alpha_nominal=_alpha(nom_matrix, "nominal"),
        alpha_ordinal=_alpha(ord_matrix, "ordinal"),
        items_nominal=int(np.unique(items_of[nom_units]).size),
        items_ordinal=int(np.unique(items_of[ord_units]).size),
        units_nominal=len(nom_units),
        units_ordinal=len(ord_units),
    )


def _pairs(nom: _Values, names: list[str]) -> list[PairKappa]:
    matrix, _ = _pairable(nom, len(names))  # units with one label are no pair's common unit
    present = ~np.isnan(matrix)
    common = present.astype(np.int64) @ present.T.astype(np.int64)  # reviewers x reviewers
    pairs = []
    for i, j in combinations(range(len(names)), 2):
        if not common[i, j]:
            continue
        both = present[i] & present[j]
        a, b = sorted((names[i], names[j]))
        pairs.append(PairKappa(a=a, b=b, kappa=_kappa(matrix[i, both], matrix[j, both]), units=int(common[i, j])))
    return sorted(pairs, key=lambda p: (p.a, p.b))


def _kappa(x: np.ndarray, y: np.ndarray) -> float | None:
    """Cohen's kappa (po - pe) / (1 - pe), in whole counts so pe == 1 is detected exactly."""
    n = len(x)
    agree = int(np.count_nonzero(x == y))  # po = agree / n
    values = np.unique(np.concatenate([x, y]))
    chance = sum(int(np.count_nonzero(x == v)) * int(np.count_nonzero(y == v)) for v in values)  # pe = chance / n^2
    if chance == n * n:  # pe = chance / n^2 = 1: kappa is undefined
        return None
    return (agree * n - chance) / (n * n - chance)


def _with_consensus(nom: _Values, consensus: np.ndarray, names: list[str]) -> list[ReviewerFigures]:
    agreed = ~np.isnan(consensus[nom.unit])
    matches = agreed & (nom.value == consensus[nom.unit])
    units = np.bincount(nom.reviewer[agreed], minlength=len(names))
    hits = np.bincount(nom.reviewer[matches], minlength=len(names))
    figures = [
        ReviewerFigures(
            reviewer=name, agreement_with_consensus=float(hits[i] / units[i]) if units[i] else None, units=int(units[i])
        )
        for i, name in enumerate(names)
    ]
    return sorted(figures, key=lambda f: f.reviewer)
