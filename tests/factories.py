"""Test factories: tiny but really trained model bundles, records of every bad-input kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from training.config import ClassifierConfig, ClustererConfig, TrainConfig
from training.train import train

REPO = Path(__file__).resolve().parents[1]
BBC = REPO / "data" / "bbc_news_train.jsonl.gz"

# One news sentence per label of the tiny model's BBC data, for records that should be labelled.
NEWS = [
    "The central bank raised interest rates again as inflation hit company profits and shares fell.",
    "The striker scored twice and the club won the league title after a tense final match.",
    "The film won three awards at the festival and its star thanked the director on stage.",
    "Ministers defended the budget in parliament as the opposition called for an election.",
    "The software update makes the new phone faster and improves battery life and security.",
]

# Small enough to train in seconds on 2 cores, big enough to learn something real.
TINY = TrainConfig(
    classifier=ClassifierConfig(vocab_size=3000, sequence_length=60, embedding_dim=16, lstm_units=16,
                                bidirectional=False, ngram_vocab=5000, epochs=3, batch_size=32),
    clusterer=ClustererConfig(vocab_size=1500, latent_dim=8, ae_epochs=1, kmeans_inits=3, dec_iterations=3),
    max_rows=400,
)


def train_tiny(model_dir: Path, config: TrainConfig = TINY) -> int:
    version = train([BBC], model_dir, config).version
    assert version is not None, "the quality gate refused a tiny model"
    return version


def copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def malformed(limit: int) -> dict[str, list[bytes]]:
    """Ten records of each bad-input kind the integration contract names, by reason."""
    return {
        "invalid_utf8": [b"bad \xff\xfe bytes %d" % i for i in range(10)],
        "missing_text": [orjson.dumps({"id": f"nt-{i}", "body": "no text here"}) for i in range(10)],
        "text_not_string": [orjson.dumps({"id": f"ns-{i}", "text": [i]}) for i in range(10)],
        "empty_text": [orjson.dumps({"id": f"et-{i}", "text": " \n\t" * (i + 1)}) for i in range(10)],
        "too_large": [orjson.dumps({"id": f"tl-{i}", "text": "x" * (limit + i)}) for i in range(10)],
    }
