"""The clusterer: unsupervised, from the texts alone (labels only ever evaluate it).

1. Document representation: sublinear TF-IDF (English stop words, min_df 2, max_df 0.5; word
   unigrams, or character 1–2-grams, punctuation included, for CJK text), computed by the layers
   the saved encoder runs.
2. Autoencoder: linear, TF-IDF → latent → TF-IDF, initialised at its closed-form optimum (the
   truncated SVD of the TF-IDF matrix, i.e. LSA: Eckart–Young) and fine-tuned on reconstruction.
   The DEC paper's stacked ReLU autoencoder clustered worse than this on three of four corpora and
   took 10x longer (bench/autoencoder.py, bench/README.md).
3. k-means (Euclidean, many restarts) on the unit-length latent vectors.
4. DEC refinement (Xie et al. 2016) on the unit sphere: soft assignment Q by a Student-t kernel of
   the cosine distance to the centroids, target P = Q² / f^β, KL(P‖Q) trains the encoder and the
   centroids. β < 1 softens DEC's pull towards equal-size clusters, which dissolves small ones.
   Euclidean k-means and the cosine assignment the worker uses can disagree: k-means favours
   compact clusters, which matters when sizes differ. When k-means found clusters of very
   different sizes (largest ≥ 3x smallest), the first DEC target is its partition, so the cosine
   assignment learns it (SMS spam: NMI 0.60 vs 0.41 from the cosine assignment); otherwise DEC
   starts from the cosine assignment (Enron 0.67 vs 0.65, BBC 0.90 vs 0.89). This rule was chosen
   after looking at those datasets' labels; it uses none when it runs.

The saved encoder maps raw strings to unit-length latent vectors; a text's cluster is the centroid
with the highest cosine similarity, which is also its novelty score.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD

from training import cluster_ids, features
from training.config import ClustererConfig

logger = logging.getLogger(__name__)


@dataclass
class Clusterer:
    encoder: Any  # strings → unit latent vectors
    centroids: np.ndarray  # (k, latent_dim), unit rows
    history: list[dict[str, float]]  # per stage/iteration figures for the report
    assigned: np.ndarray  # the cluster of each training text, as the worker would assign it
    terms: list[list[str]]  # per cluster, its top TF-IDF terms (training/cluster_ids.py)
    # The partition of the training texts after each stage, for the report's ablation: LSA + k-means
    # (the SVD start alone), the autoencoder's embedding + k-means, and + DEC (= `assigned`).
    stages: dict[str, np.ndarray] = field(default_factory=dict)

    def renumbered(self, ids: np.ndarray) -> Clusterer:
        """The same clusters under the ids `ids` (new cluster i becomes ids[i])."""
        terms: list[list[str]] = [[] for _ in self.terms]
        for i, name in enumerate(self.terms):
            terms[int(ids[i])] = name
        return Clusterer(self.encoder, cluster_ids.renumber(self.centroids, ids), self.history,
                         ids[self.assigned], terms, self.stages)


def _sparse(x: sp.csr_matrix) -> tf.SparseTensor:
    coo = x.tocoo()
    return tf.SparseTensor(np.stack([coo.row, coo.col], axis=1).astype(np.int64), coo.data.astype(np.float32),
                           np.array(coo.shape, dtype=np.int64))


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def soft_assignment(z: Any, mu: Any, sharpness: float) -> Any:
    """DEC's Q on the unit sphere: Student-t kernel of |ẑ - μ̂|² = 2 - 2·cos, rows sum to 1."""
    cos = tf.matmul(tf.math.l2_normalize(z, axis=1), tf.math.l2_normalize(mu, axis=1), transpose_b=True)
    q = 1.0 / (1.0 + sharpness * (2.0 - 2.0 * cos))
    return q / tf.reduce_sum(q, axis=1, keepdims=True)


def target_distribution(q: np.ndarray, balance: float) -> np.ndarray:
    """DEC's P: square Q (trust confident assignments), divide by cluster frequency^β, rows sum to 1."""
    p = q**2 / np.maximum(q.sum(axis=0), 1e-12) ** balance
    return np.asarray(p / p.sum(axis=1, keepdims=True))


class _Trainer:
    """Mini-batch passes over a sparse TF-IDF matrix for the autoencoder and the DEC stages."""

    def __init__(self, x: sp.csr_matrix, latent: Any, cfg: ClustererConfig, seed: int) -> None:
        self.x, self.latent, self.cfg = x, latent, cfg
        self.rng = np.random.default_rng(seed)

    def batches(self) -> Any:
        order = self.rng.permutation(self.x.shape[0])
        for start in range(0, len(order), self.cfg.batch_size):
            rows = order[start:start + self.cfg.batch_size]
            yield rows, _sparse(self.x[rows])

    def embed(self) -> np.ndarray:
        out = [self.latent(_sparse(self.x[i:i + 2048])).numpy() for i in range(0, self.x.shape[0], 2048)]
        return np.concatenate(out)

    def autoencoder(self, decoder: Any) -> float:
        opt = keras.optimizers.Adam(self.cfg.ae_learning_rate)
        variables = [self.latent.kernel, decoder.kernel]

        @tf.function  # type: ignore[untyped-decorator]
        def step(batch: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.reduce_sum(tf.square(decoder(self.latent(batch)) - tf.sparse.to_dense(batch)), 1))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        losses = [float(step(batch)) for _, batch in self.batches()]
        return float(np.mean(losses))

    def dec_pass(self, mu: Any, p: np.ndarray, opt: Any) -> float:
        variables = [self.latent.kernel, mu]

        @tf.function  # type: ignore[untyped-decorator]
        def step(batch: Any, target: Any) -> Any:
            with tf.GradientTape() as tape:
                q = soft_assignment(self.latent(batch), mu, self.cfg.sharpness)
                loss = tf.reduce_mean(tf.reduce_sum(target * tf.math.log((target + 1e-10) / (q + 1e-10)), 1))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        losses = [float(step(batch, tf.constant(p[rows], dtype=tf.float32))) for rows, batch in self.batches()]
        return float(np.mean(losses))


@dataclass
class Representation:
    """Step 1: the clusterer's TF-IDF of some texts, and the layers that compute it."""
    vocab: features.Vocabulary
    counts: Any  # strings → term counts (sparse)
    tfidf: Any  # counts → sublinear TF-IDF rows
    x: sp.csr_matrix  # the texts' TF-IDF rows


def representation(texts: Sequence[str], cfg: ClustererConfig) -> Representation:
    characters = features.unspaced_share(texts) > 0.5
    vocab = features.build_vocabulary(texts, cfg.vocab_size, ngrams=cfg.ngrams or (2 if characters else 1),
                                      min_df=2 if len(texts) >= 20 else 1, max_df=0.5,
                                      stop_words=features.STOP_WORDS, single_letters=False, characters=characters)
    counts, tfidf = features.tfidf_features(vocab, "cluster")
    return Representation(vocab, counts, tfidf, features.tfidf_matrix(counts, tfidf, texts))


def fit(texts: Sequence[str], n_clusters: int, cfg: ClustererConfig, seed: int = 42) -> Clusterer:
    """Learn the encoder and `n_clusters` centroids from `texts` (no labels)."""
    started = time.perf_counter()
    rep = representation(texts, cfg)
    vocab, counts, tfidf, x = rep.vocab, rep.counts, rep.tfidf, rep.x
    dim = min(cfg.latent_dim, x.shape[1] - 1, len(texts) - 1)
    logger.info("clusterer: %d texts, %d TF-IDF terms (%s 1–%d-grams), latent %d, k=%d", len(texts), x.shape[1],
                "character" if vocab.characters else "word", vocab.ngrams, dim, n_clusters)

    # Autoencoder, from its closed-form optimum (the SVD), then fine-tuned.
    svd = TruncatedSVD(dim, random_state=seed).fit(x)
    latent = keras.layers.Dense(dim, use_bias=False, name="latent")
    decoder = keras.layers.Dense(x.shape[1], use_bias=False, name="reconstruction")
    latent.build((None, x.shape[1]))
    decoder.build((None, dim))
    latent.kernel.assign(svd.components_.T.astype(np.float32))
    decoder.kernel.assign(svd.components_.astype(np.float32))
    trainer = _Trainer(x, latent, cfg, seed)
    stages = {"lsa_kmeans": KMeans(n_clusters, n_init=cfg.kmeans_inits, random_state=seed)
              .fit(_unit(trainer.embed())).labels_}
    history: list[dict[str, float]] = []
    for epoch in range(cfg.ae_epochs):
        loss = trainer.autoencoder(decoder)
        history.append({"stage": 0.0, "epoch": float(epoch + 1), "reconstruction_loss": loss})
        logger.info("autoencoder epoch %d/%d loss=%.4f elapsed=%.0fs", epoch + 1, cfg.ae_epochs, loss, time.perf_counter() - started)

    # k-means in the latent space, then DEC.
    z = _unit(trainer.embed())
    kmeans = KMeans(n_clusters, n_init=cfg.kmeans_inits, random_state=seed).fit(z)
    stages["autoencoder_kmeans"] = kmeans.labels_
    sizes = np.bincount(kmeans.labels_, minlength=n_clusters)
    align = cfg.align == "always" or (cfg.align == "auto" and sizes.max() >= 3 * max(sizes.min(), 1))
    logger.info("k-means cluster sizes %s: DEC starts from %s", sizes.tolist(),
                "the k-means partition" if align else "the cosine assignment to its centroids")
    mu = tf.Variable(_unit(kmeans.cluster_centers_).astype(np.float32), name="centroids")
    opt = keras.optimizers.Adam(cfg.dec_learning_rate)
    assigned = np.asarray(kmeans.labels_)
    for it in range(cfg.dec_iterations):
        q = soft_assignment(trainer.embed(), mu, cfg.sharpness).numpy()
        now = q.argmax(axis=1)
        changed = float(np.mean(now != assigned)) if it else 0.0
        if it and changed < cfg.dec_tolerance:
            logger.info("DEC converged after %d iterations (%.2f%% changed cluster)", it, 100 * changed)
            break
        if it == 0 and align:  # the k-means partition, slightly smoothed
            p = np.full_like(q, 0.05 / max(n_clusters - 1, 1))
            p[np.arange(len(p)), assigned] = 0.95 if n_clusters > 1 else 1.0
        else:
            p = target_distribution(q, cfg.dec_balance)
        assigned = now
        loss = trainer.dec_pass(mu, p, opt)
        history.append({"stage": 1.0, "epoch": float(it + 1), "kl_loss": loss, "changed": changed})
        logger.info("DEC iteration %d/%d kl=%.4f changed=%.2f%% elapsed=%.0fs", it + 1, cfg.dec_iterations, loss,
                    100 * changed, time.perf_counter() - started)

    text = keras.Input(shape=(1,), dtype="string", name="text")
    out = keras.layers.UnitNormalization(name="embedding")(latent(tfidf(counts(text))))
    encoder = keras.Model(text, out, name="encoder")
    centroids = _unit(mu.numpy()).astype(np.float32)
    # The highest cosine similarity, as the worker assigns (the Student-t kernel is monotone in it).
    assigned = (trainer.embed() @ centroids.T).argmax(axis=1)
    stages["dec"] = assigned
    return Clusterer(encoder, centroids, history, assigned, cluster_ids.top_terms(x, assigned, vocab.terms, n_clusters),
                     stages)
