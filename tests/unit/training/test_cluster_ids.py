"""Stable cluster ids (training/cluster_ids.py): a new version's clusters keep the served version's
ids by the texts they share; cluster names are their top terms."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.cluster_ids import match, renumber, top_terms


def test_the_same_partition_under_other_numbers_keeps_every_id() -> None:
    rng = np.random.default_rng(0)
    previous = rng.integers(0, 5, 1000)
    relabel = np.array([3, 0, 4, 1, 2])  # the new training numbered cluster c as relabel[c]
    current = relabel[previous]
    m = match(previous, current, 5, 5)
    assert m.changed_share == 0.0
    assert (m.ids[current] == previous).all()
    assert sorted(m.ids.tolist()) == [0, 1, 2, 3, 4]


def test_a_few_moved_texts_are_what_changes() -> None:
    rng = np.random.default_rng(1)
    previous = rng.integers(0, 4, 2000)
    current = (previous + 1) % 4
    moved = rng.choice(2000, 60, replace=False)
    current[moved] = rng.integers(0, 4, 60)
    m = match(previous, current, 4, 4)
    assert np.isclose(m.changed_share, np.mean(m.ids[current] != previous))
    assert m.changed_share <= 60 / 2000


def test_an_extra_cluster_gets_a_new_id_and_the_others_keep_theirs() -> None:
    previous = np.repeat([0, 1, 2], 100)
    current = np.repeat([2, 0, 1], 100)
    current[:30] = 3  # a new cluster split off the old cluster 0
    m = match(previous, current, 3, 4)
    assert m.ids.tolist() == [1, 2, 0, 3]
    assert np.isclose(m.changed_share, 30 / 300)


def test_fewer_clusters_keep_ids_below_k() -> None:
    previous = np.repeat([0, 1, 2, 3], 50)
    current = np.repeat([0, 0, 1, 2], 50)  # old clusters 0 and 1 merged; 3 must move below k = 3
    m = match(previous, current, 4, 3)
    assert sorted(m.ids.tolist()) == [0, 1, 2]
    assert m.ids[1] == 2  # old cluster 2 kept its id
    assert m.ids[2] != 3


def test_renumber_moves_rows_to_their_ids() -> None:
    rows = np.array([[0.0], [1.0], [2.0]])
    assert renumber(rows, np.array([2, 0, 1])).ravel().tolist() == [1.0, 2.0, 0.0]


def test_top_terms_are_the_words_a_cluster_uses_more_than_the_others() -> None:
    terms = ["goal", "match", "bank", "rates", "the"]
    # columns: 0 out of vocabulary, then the terms; "the" is everywhere and names no cluster
    x = sp.csr_matrix(np.array([
        [0, 0.9, 0.5, 0, 0, 0.2],
        [0, 0.8, 0.7, 0, 0, 0.2],
        [0, 0, 0, 0.9, 0.6, 0.2],
        [0, 0, 0, 0.7, 0.8, 0.2],
    ]))
    names = top_terms(x, np.array([0, 0, 1, 1]), terms, k=3, n=2)
    assert names == [["goal", "match"], ["bank", "rates"], []]
