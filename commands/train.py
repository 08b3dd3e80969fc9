"""`textstream train`: train a classifier and a clusterer, gate them, publish a model version."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import orjson
from pydantic import BaseModel

from commands import clients, models
from training import config
from training.config import ClassifierConfig, ClustererConfig, TrainConfig
from worker import logs, registry
from worker.errors import TextstreamError

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


def training_module() -> Any:
    """training.train, or a clear exit where the `train` extra is not installed (the worker image)."""
    try:
        return importlib.import_module("training.train")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"textstream train: {(exc.name or '?').split('.')[0]} is missing: training needs the `train` extra "
                         "(pip install 'textstream[train]'); deploy/Dockerfile's worker image leaves it out, "
                         "its default image has it") from None


def cmd_train(args: argparse.Namespace) -> int:
    settings = clients.kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    if args.check:
        return cmd_check(args)
    train = training_module().train

    # With --json, stdout carries one JSON object and nothing else; the human lines go to stderr.
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout)
    args.model_dir = models.model_dir(args)
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = train([Path(p) for p in args.data], args.model_dir, train_config(args),
                       eval_paths=[Path(p) for p in args.eval_data] if args.eval_data else None)
    m, weights = result.metrics, result.details.get("branch_weights") or {}
    mix = f" ({registry.describe_mix(weights)})" if "lstm_weight" in weights else ""
    say(f"classifier: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}{mix}")
    say(f"clusters:   NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  purity {m['purity']:.4f}  silhouette {m['silhouette']:.4f}")
    say(result.decision.describe())
    took = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total")
    report = None if result.version is None else args.model_dir / str(result.version) / "report" / "report.md"
    if args.json:
        print(orjson.dumps({
            "published": result.version is not None, "version": result.version, "model_dir": str(args.model_dir),
            "metrics": result.metrics, "gate": dataclasses.asdict(result.decision),
            "seconds": round(result.seconds, 1), "timings_s": {k: round(v, 1) for k, v in result.timings.items()},
            "report": None if report is None else str(report),
        }).decode())
    if result.version is None:
        say(f"not published; took {result.seconds:.0f}s ({took})")
        return EXIT_GATE_REFUSED
    models.announce(args, {"event": "published", "version": result.version})
    say(f"published version {result.version} to {args.model_dir} in {result.seconds:.0f}s ({took}); report: {report}")
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    settings = clients.kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    training_module()  # a clear exit where the `train` extra is missing
    import asyncio
    import signal

    from prometheus_client import start_http_server

    from training import trainer

    tsettings = trainer.load_trainer_settings()
    if not tsettings.data_paths:
        raise TextstreamError("TEXTSTREAM_TRAINER_DATA is empty: name the base training data (files or folders, "
                              "comma-separated); corrections are added to it")
    missing = [str(p) for p in tsettings.data_paths if not p.exists()]
    if missing:
        raise TextstreamError(f"TEXTSTREAM_TRAINER_DATA: not found: {', '.join(missing)}")
    cfg = train_config(args)
    settings = settings.model_copy(update={"model_dir": models.model_dir(args)})
    if tsettings.trainer_port:
        start_http_server(tsettings.trainer_port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await trainer.Trainer(settings, tsettings, cfg).run(stop)

    asyncio.run(serve())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`train --check`: read and split the data as training would, print what it found, exit 0 (usable)
    or 1 (not), without training."""
    check = training_module().check

    try:
        found = check([Path(p) for p in args.data], train_config(args),
                      eval_paths=[Path(p) for p in args.eval_data] if args.eval_data else None)
    except TextstreamError as exc:
        if args.json:
            print(orjson.dumps({"ok": False, "error": str(exc)}).decode())
        print(f"textstream train --check: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps({"ok": True, **found}).decode())
        return 0
    print(check_text(found))
    return 0


def check_text(found: dict[str, Any]) -> str:
    splits, per_label = found["splits"], found["per_label"]
    width = max(len("label"), *(len(name) for name in per_label))
    lines = [f"data:   {', '.join(found['sources'])}",
             f"rows:   {found['rows']} usable, {found['skipped']} skipped",
             f"splits: {splits['fit']} fit, {splits['validation']} validation (early stopping, branch weights), "
             f"{splits['evaluation']} evaluation",
             "", f"  {'label':<{width}}  {'fit':>7}  {'validation':>10}  {'evaluation':>10}"]
    lines += [f"  {name:<{width}}  {n['fit']:>7}  {n['validation']:>10}  {n['evaluation']:>10}" for name, n in per_label.items()]
    return "\n".join(lines) + "\n\ndata OK: `textstream train` with the same flags would train on these"


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show: no value, a required option, or an on/off
    flag (--no-announce is on or off, its "default: True" would only confuse)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if action.default is None or action.default is False or action.required or flag:
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
    g.add_argument("--check", action="store_true",
                   help="only read and split the data: print the rows per label in each split, exit 0 if "
                        "training could start, 1 if not")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the version published or null, metrics, gate decision; "
                        "with --check, what was found); the readable lines go to stderr")
    clients.add_command_config(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "trainer", help="the learning loop as a service: retrain from corrections on the feedback topic",
        description="Reads corrections from TEXTSTREAM_FEEDBACK_TOPIC ({\"id\", \"label\"} or {\"text\", "
                    "\"label\"}; an id is joined with its text from TEXTSTREAM_OUTPUT_TOPIC) into a store in "
                    "TEXTSTREAM_TRAINER_STATE, and retrains on TEXTSTREAM_TRAINER_DATA plus the corrections once "
                    "TEXTSTREAM_TRAINER_MIN_CORRECTIONS new ones arrived (or TEXTSTREAM_TRAINER_INTERVAL passed with "
                    "any pending). The quality gate decides; a published version is announced and workers swap "
                    "to it. Bad feedback records go to the dead-letter topic. Run one per deployment; it resumes "
                    "from its store after a restart. Metrics on TEXTSTREAM_TRAINER_PORT (/metrics).",
        formatter_class=_Defaults,
    )
    p.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    groups = {name: p.add_argument_group(name) for name in ("data", "classifier", "clusterer", "quality gate")}
    for group, name, _, kwargs in setting_flags():
        groups[group].add_argument(name, **kwargs)
    clients.add_command_config(p)
    p.set_defaults(func=cmd_trainer)
