"""The `textstream` console entry point: the worker commands plus `train` and `demo`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from worker import cli as worker_cli
from worker import logs

logger = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def _default_model_dir() -> Path:
    return Path(os.environ.get("TEXTSTREAM_MODEL_DIR", "models"))


def cmd_train(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    from training.models import ModelConfig
    from training.train import TrainConfig, train

    cfg = TrainConfig(
        model=ModelConfig(vocab_size=args.vocab_size, sequence_length=args.sequence_length),
        epochs=args.epochs, ae_epochs=args.ae_epochs, n_clusters=args.n_clusters, seed=args.seed,
        max_rows=args.max_rows,
    )
    result = train([Path(p) for p in args.data], args.model_dir, cfg)
    shown = " ".join(f"{k}={v}" for k, v in result.metrics.items())
    print(f"published version {result.version} to {args.model_dir} ({shown}) in {result.seconds:.0f}s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    from training.demo import run_demo

    return run_demo(args.model_dir, REPO_DATA)


def build_parser() -> argparse.ArgumentParser:
    parser = worker_cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    p = sub.add_parser("train", help="train a classifier and clusterer and publish a new model version",
                       description="Reads JSONL or CSV files (optionally .gz) with 'text' and 'label', trains "
                                   "the LSTM classifier and the autoencoder clusterer, evaluates them on a "
                                   "held-out split and publishes the next version into the registry.")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="training files")
    p.add_argument("--model-dir", type=Path, default=_default_model_dir(),
                   help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    p.add_argument("--epochs", type=int, default=12, help="max classifier epochs (early stopping)")
    p.add_argument("--ae-epochs", type=int, default=15, help="autoencoder epochs")
    p.add_argument("--n-clusters", type=int, help="default: the number of labels")
    p.add_argument("--vocab-size", type=int, default=20_000)
    p.add_argument("--sequence-length", type=int, default=200, help="tokens per text for the LSTM")
    p.add_argument("--max-rows", type=int, help="train on a stratified sample of this many rows")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="start Kafka, train if needed, run a worker, send samples, show results",
                       description="End-to-end demo on this machine: starts a fresh local broker, trains on the "
                                   "bundled BBC News + SMS Spam data if the registry is empty, runs a worker, "
                                   "sends news and SMS texts plus malformed records, prints what came out, "
                                   "then stops everything.")
    p.add_argument("--model-dir", type=Path, default=_default_model_dir(),
                   help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    return worker_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
