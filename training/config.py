"""Every training setting, in plain dataclasses (importing this module does not load TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ClassWeight = Literal["auto", "balanced", "none"]
BadRows = Literal["skip", "fail"]
Align = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class ClassifierConfig:
    vocab_size: int = 20_000  # LSTM vocabulary
    sequence_length: int = 256  # tokens per text the LSTM reads
    head_fraction: float = 0.75  # of a long text's tokens taken from its start, the rest from its end
    embedding_dim: int = 64
    lstm_units: int = 64
    bidirectional: bool = True
    dropout: float = 0.3
    ngram_vocab: int = 200_000  # wide branch size; 0 = LSTM only
    ngrams: int = 0  # wide branch n-gram order; 0 = auto: word 1–2-grams, or character 1–3-grams for CJK text
    epochs: int = 12  # most LSTM epochs; early stopping usually ends sooner
    patience: int = 2
    batch_size: int = 64
    learning_rate: float = 2e-3  # LSTM branch
    wide_c: float = 1.0  # C of the n-gram branch's linear SVM (inverse regularisation strength)
    validation_fraction: float = 0.1  # of the training texts: LSTM early stopping, branch weights
    class_weight: ClassWeight = "auto"  # LSTM; auto: balanced when the largest class is 3x the smallest


@dataclass(frozen=True)
class ClustererConfig:
    n_clusters: int | None = None  # default: the number of labels
    vocab_size: int = 20_000  # TF-IDF terms
    ngrams: int = 0  # 0 = auto: word unigrams, or character 1–2-grams for CJK text
    latent_dim: int = 50
    ae_epochs: int = 2
    ae_learning_rate: float = 1e-4
    kmeans_inits: int = 20
    dec_iterations: int = 10  # target updates (one pass over the texts each)
    # First DEC target = the k-means partition (else DEC starts from the cosine assignment);
    # auto: when k-means found clusters of very different sizes (largest ≥ 3x smallest).
    align: Align = "auto"
    dec_learning_rate: float = 1e-3
    dec_tolerance: float = 0.001  # stop when fewer than this share of texts change cluster
    dec_balance: float = 0.5  # β in P = Q²/f^β; 1 is DEC's original, 0 plain sharpening
    sharpness: float = 10.0  # Student-t kernel 1 / (1 + s·|z - μ|²) on unit vectors
    batch_size: int = 256


@dataclass(frozen=True)
class TrainConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    clusterer: ClustererConfig = field(default_factory=ClustererConfig)
    test_size: float = 0.15  # held out for evaluation when no evaluation data is given
    seed: int = 42
    max_rows: int | None = None  # train on a stratified sample of this many rows
    text_field: str = "text"
    label_field: str = "label"
    bad_rows: BadRows = "skip"
    gate_tolerance: float = 0.01  # publish only if macro-F1 >= current version's - this
    force: bool = False  # publish even if the gate says no
    # The clusterer never sees labels, so it may learn from the evaluation texts too, as the
    # LSA + k-means baseline does; the classifier never sees them.
    cluster_eval_texts: bool = True
