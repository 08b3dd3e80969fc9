"""Stable cluster ids and cluster names.

k-means and DEC number their clusters arbitrarily, so every training renumbered them and a consumer
that followed a cluster lost it at the next version. A new version's clusters are matched to the
serving version's by the training texts they share: both versions assign every training text, the
overlap matrix (new cluster x served cluster) is solved as an assignment problem (Hungarian, most
shared texts), and each new cluster takes the id of the served cluster it matched. Clusters left
over (a version with more clusters, or a match with no text in common) take the ids nobody kept.
Ids stay 0..k-1: a cluster's id is its centroid's row.

A cluster's name is its top terms: the TF-IDF terms whose mean weight in the cluster's texts
exceeds their mean over all texts the most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

TERMS_PER_CLUSTER = 5


@dataclass(frozen=True)
class Matching:
    """new cluster i keeps id `ids[i]`; `changed_share`: the share of the texts whose id differs
    between the served version and the new one after the matching."""

    ids: np.ndarray
    changed_share: float


def match(previous: np.ndarray, current: np.ndarray, k_previous: int, k: int) -> Matching:
    """Ids for the `k` new clusters from the served version's assignment `previous` (ids < `k_previous`)
    and the new one's `current` of the same texts."""
    overlap = np.zeros((k, max(k_previous, 1)), dtype=np.int64)
    np.add.at(overlap, (current, previous), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    ids = np.full(k, -1, dtype=np.int64)
    for new, old in zip(rows, cols, strict=True):
        if old < k and overlap[new, old] > 0:
            ids[new] = old
    free = iter(sorted(set(range(k)) - set(ids[ids >= 0].tolist())))
    for new in np.flatnonzero(ids < 0):
        ids[new] = next(free)
    changed = float(np.mean(ids[current] != previous)) if len(current) else 0.0
    return Matching(ids, changed)


def renumber(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`rows` (one per cluster, in the new version's order) moved to their stable ids."""
    out = np.empty_like(rows)
    out[ids] = rows
    return out


def top_terms(x: sp.csr_matrix, assigned: np.ndarray, terms: Sequence[str], k: int,
              n: int = TERMS_PER_CLUSTER) -> list[list[str]]:
    """Per cluster, up to `n` terms that weigh most above their mean in its texts. Column j of `x` is
    `terms[j - 1]`; column 0 (out of vocabulary) weighs 0."""
    overall = np.asarray(x.mean(axis=0)).ravel()
    names: list[list[str]] = []
    for c in range(k):
        members = x[assigned == c]
        if members.shape[0] == 0:
            names.append([])
            continue
        lift = np.asarray(members.mean(axis=0)).ravel() - overall
        lift[0] = -np.inf
        best = np.argsort(-lift, kind="stable")[:n]
        names.append([str(terms[j - 1]) for j in best if lift[j] > 0])
    return names
