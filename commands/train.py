"""`textstream train`: train a classifier and a clusterer, gate them, publish a model version."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from commands import models
from training import config
from training.config import ClassifierConfig, ClustererConfig, TrainConfig
from worker import logs

EXIT_GATE_REFUSED = 3


# (part of TrainConfig, settings class): the flags of each come from its fields (training/config.py).
PARTS: tuple[tuple[str, type[BaseModel]], ...] = (("", TrainConfig), ("classifier", ClassifierConfig),
                                                  ("clusterer", ClustererConfig))


def setting_flags() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(group, flag, dest, add_argument keywords) of every setting that has a flag."""
    for part, cls in PARTS:
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if not isinstance(extra, dict) or "flag" not in extra:
                continue
            kwargs: dict[str, Any] = {"dest": f"{part}.{name}" if part else name, "default": info.default,
                                      "help": info.description, "metavar": name.upper()}
            kind = info.annotation
            if kind is bool:
                del kwargs["metavar"]
                kwargs["action"] = argparse.BooleanOptionalAction if info.default else "store_true"
            elif get_origin(kind) is Literal:
                kwargs["choices"], kwargs["metavar"] = get_args(kind), None
            else:
                kwargs["type"] = next(t for t in get_args(kind) if t is not type(None)) if get_args(kind) else kind
            yield str(extra["group"]), str(extra["flag"]), kwargs["dest"], kwargs


def train_config(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, dict[str, Any]] = {part: {} for part, _ in PARTS}
    for _, _, dest, _ in setting_flags():
        part, _, name = dest.rpartition(".")
        values[part][name] = getattr(args, dest)
    return config.build(values["classifier"], values["clusterer"], **values[""])


def cmd_train(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    try:
        from training.train import train
    except ModuleNotFoundError as exc:  # an install without the `train` extra (the worker image)
        raise SystemExit(f"textstream train: {(exc.name or '?').split('.')[0]} is missing: training needs the `train` extra "
                         "(pip install 'textstream[train]'); deploy/Dockerfile's worker image leaves it out, "
                         "its default image has it") from None

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
    p = sub.add_parser(
        "train", help="train a classifier and clusterer and publish a new model version",
        description="Reads JSONL or CSV files (optionally .gz) with a text and a label per row, or directories "
                    "of per-class text files (DIR/<label>/*.txt, or DIR/<label>.txt with one text per line). "
                    "Trains the classifier (LSTM + n-gram branches) and the unsupervised clusterer "
                    "(autoencoder + DEC), evaluates both on held-out texts, writes a report, and publishes the "
                    f"next version if the quality gate agrees (exit status {EXIT_GATE_REFUSED} if it does not).",
        formatter_class=_Defaults,
    )
    groups = {name: p.add_argument_group(name) for name in ("data", "classifier", "clusterer", "quality gate")}
    g = groups["data"]
    g.add_argument("--data", nargs="+", required=True, metavar="PATH", help="training files or directories")
    g.add_argument("--eval-data", nargs="+", metavar="PATH",
                   help="evaluation files; default: hold out --test-size of the training data")
    g.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    for group, name, _, kwargs in setting_flags():
        groups[group].add_argument(name, **kwargs)
    groups["quality gate"].add_argument(
        "--no-announce", dest="announce", action="store_false",
        help="do not announce the new version on TEXTSTREAM_MODELS_TOPIC (workers still find it by polling)")
    p.set_defaults(func=cmd_train)
