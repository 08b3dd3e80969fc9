from __future__ import annotations

import numpy as np

from training import clusterer, gate


def test_gate_publishes_when_not_worse_than_current_minus_tolerance() -> None:
    assert gate.decide(0.90, None, 0.01).publish  # first version
    assert gate.decide(0.95, 0.94, 0.0).publish  # better
    assert gate.decide(0.94, 0.94, 0.0).publish  # equal
    assert gate.decide(0.935, 0.94, 0.01).publish  # within tolerance
    assert not gate.decide(0.92, 0.94, 0.01).publish  # worse by more than the tolerance
    forced = gate.decide(0.92, 0.94, 0.01, force=True, current_version=4)
    assert forced.publish and forced.forced
    assert "published because of --force" in forced.describe()
    refused = gate.decide(0.92, 0.94, 0.01, current_version=4)
    text = refused.describe()
    assert "0.9200 (new) vs 0.9400 (version 4)" in text and "REJECTED" in text and "tolerance 0.0100" in text


def test_dec_target_distribution_sharpens_and_balances() -> None:
    q = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.45, 0.55]])
    plain = clusterer.target_distribution(q, balance=0.0)
    assert np.allclose(plain.sum(axis=1), 1.0)
    assert np.all(plain.max(axis=1) > q.max(axis=1))  # more confident than Q
    assert np.array_equal(plain.argmax(axis=1), q.argmax(axis=1))
    balanced = clusterer.target_distribution(q, balance=1.0)
    assert np.all(balanced[:, 1] > plain[:, 1])  # the smaller cluster gets more weight


def test_soft_assignment_ranks_centroids_by_cosine() -> None:
    z = np.array([[10.0, 1.0], [0.1, 3.0]], dtype=np.float32)
    mu = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    q = clusterer.soft_assignment(z, mu, sharpness=10.0).numpy()
    assert np.allclose(q.sum(axis=1), 1.0) and q.argmax(axis=1).tolist() == [0, 1]
