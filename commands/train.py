"""`textstream train`: train a classifier and a clusterer, gate them, publish a model version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from commands import models
from training.config import ClassifierConfig, ClustererConfig, TrainConfig
from worker import logs

EXIT_GATE_REFUSED = 3


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        classifier=ClassifierConfig(
            vocab_size=args.vocab_size, sequence_length=args.sequence_length, head_fraction=args.head_fraction,
            embedding_dim=args.embedding_dim, lstm_units=args.lstm_units, bidirectional=args.bidirectional,
            dropout=args.dropout, ngram_vocab=args.ngram_vocab, ngrams=args.ngrams, wide_c=args.svm_c, epochs=args.epochs,
            patience=args.patience, batch_size=args.batch_size, learning_rate=args.learning_rate,
            validation_fraction=args.validation_fraction, class_weight=args.class_weight,
        ),
        clusterer=ClustererConfig(
            n_clusters=args.n_clusters, vocab_size=args.cluster_vocab, latent_dim=args.latent_dim,
            ae_epochs=args.ae_epochs, dec_iterations=args.dec_iterations, dec_balance=args.dec_balance,
        ),
        test_size=args.test_size, seed=args.seed, max_rows=args.max_rows, text_field=args.text_field,
        label_field=args.label_field, bad_rows=args.bad_rows, gate_tolerance=args.gate_tolerance, force=args.force,
    )


def cmd_train(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    from training.train import train

    args.model_dir = models.model_dir(args)
    result = train([Path(p) for p in args.data], args.model_dir, train_config(args),
                   eval_paths=[Path(p) for p in args.eval_data] if args.eval_data else None)
    m, weights = result.metrics, result.details.get("branch_weights") or {}
    mix = (f" (LSTM weight {weights['lstm_weight']}, n-gram weight {weights['ngram_weight']})"
           if "lstm_weight" in weights else "")
    print(f"classifier: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}{mix}")
    print(f"clusters:   NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  purity {m['purity']:.4f}  silhouette {m['silhouette']:.4f}")
    print(result.decision.describe())
    took = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total")
    if result.version is None:
        print(f"not published; took {result.seconds:.0f}s ({took})")
        return EXIT_GATE_REFUSED
    models.announce(args, {"event": "published", "version": result.version})
    print(f"published version {result.version} to {args.model_dir} in {result.seconds:.0f}s ({took}); "
          f"report: {args.model_dir / str(result.version) / 'report' / 'report.md'}")
    return 0


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.required:
            return action.help or ""
        return str(super()._get_help_string(action))


def add_parsers(sub: Any) -> None:
    c, k = ClassifierConfig, ClustererConfig
    p = sub.add_parser(
        "train", help="train a classifier and clusterer and publish a new model version",
        description="Reads JSONL or CSV files (optionally .gz) with a text and a label per row, or directories "
                    "of per-class text files (DIR/<label>/*.txt, or DIR/<label>.txt with one text per line). "
                    "Trains the classifier (LSTM + n-gram branches) and the unsupervised clusterer "
                    "(autoencoder + DEC), evaluates both on held-out texts, writes a report, and publishes the "
                    f"next version if the quality gate agrees (exit status {EXIT_GATE_REFUSED} if it does not).",
        formatter_class=_Defaults,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", required=True, metavar="PATH", help="training files or directories")
    g.add_argument("--eval-data", nargs="+", metavar="PATH",
                   help="evaluation files; default: hold out --test-size of the training data")
    g.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    g.add_argument("--text-field", default="text", help="JSON field / CSV column with the text")
    g.add_argument("--label-field", default="label", help="JSON field / CSV column with the label")
    g.add_argument("--bad-rows", choices=["skip", "fail"], default="skip",
                   help="unreadable rows: skip them (reported with line numbers) or fail")
    g.add_argument("--test-size", type=float, default=0.15, help="share held out for evaluation")
    g.add_argument("--max-rows", type=int, help="train on a stratified sample of this many rows")
    g.add_argument("--seed", type=int, default=42, help="for splits, initial weights and k-means")

    g = p.add_argument_group("classifier")
    g.add_argument("--epochs", type=int, default=c.epochs, help="most LSTM epochs (early stopping on validation loss)")
    g.add_argument("--patience", type=int, default=c.patience, help="epochs without validation improvement")
    g.add_argument("--batch-size", type=int, default=c.batch_size, help="LSTM batch size")
    g.add_argument("--learning-rate", type=float, default=c.learning_rate, help="LSTM branch")
    g.add_argument("--validation-fraction", type=float, default=c.validation_fraction,
                   help="of the training texts, for early stopping and weighing the branches")
    g.add_argument("--vocab-size", type=int, default=c.vocab_size, help="LSTM vocabulary")
    g.add_argument("--sequence-length", type=int, default=c.sequence_length, help="tokens per text for the LSTM")
    g.add_argument("--head-fraction", type=float, default=c.head_fraction,
                   help="of a long text's tokens taken from its start (the rest from its end)")
    g.add_argument("--embedding-dim", type=int, default=c.embedding_dim, help="token embedding size")
    g.add_argument("--lstm-units", type=int, default=c.lstm_units, help="LSTM units per direction")
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=c.bidirectional,
                   help="read each text in both directions")
    g.add_argument("--dropout", type=float, default=c.dropout, help="on the pooled LSTM states")
    g.add_argument("--ngram-vocab", type=int, default=c.ngram_vocab, help="n-gram (linear SVM) branch size; 0: LSTM only")
    g.add_argument("--ngrams", type=int, default=c.ngrams,
                   help="n-gram order; 0: 2 (words), or 3 (characters) for CJK text")
    g.add_argument("--svm-c", type=float, default=c.wide_c, help="C of the n-gram branch's linear SVM")
    g.add_argument("--class-weight", choices=["auto", "balanced", "none"], default=c.class_weight,
                   help="LSTM class weights; auto: balanced when the largest class is 3x the smallest")

    g = p.add_argument_group("clusterer")
    g.add_argument("--n-clusters", type=int, help="default: the number of labels")
    g.add_argument("--cluster-vocab", type=int, default=k.vocab_size, help="TF-IDF terms")
    g.add_argument("--latent-dim", type=int, default=k.latent_dim, help="embedding size")
    g.add_argument("--ae-epochs", type=int, default=k.ae_epochs, help="autoencoder fine-tuning epochs")
    g.add_argument("--dec-iterations", type=int, default=k.dec_iterations, help="DEC target updates (0: k-means only)")
    g.add_argument("--dec-balance", type=float, default=k.dec_balance,
                   help="DEC's pull towards equal-size clusters (1: original DEC, 0: none)")

    g = p.add_argument_group("quality gate")
    g.add_argument("--gate-tolerance", type=float, default=0.01,
                   help="publish only if macro-F1 >= the served version's (on the same texts) minus this")
    g.add_argument("--force", action="store_true", help="publish even if the quality gate refuses")
    g.add_argument("--no-announce", dest="announce", action="store_false",
                   help="do not announce the new version on TEXTSTREAM_MODELS_TOPIC (workers still find it by polling)")
    p.set_defaults(func=cmd_train)
