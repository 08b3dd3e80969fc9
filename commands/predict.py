"""`textstream predict FILE`: score a file offline with one model version, as a worker would.

Each record of the file goes through the worker's own pure pipeline (worker/pipeline.py: decode,
predict, route), so a labelled record is the JSON the worker would publish on the output topic and
a refused one carries the dead-letter reason the worker would give it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

import orjson

from worker import config, logs
from worker.bundle import Bundle
from worker.client import key_of, snippet
from worker.records import RawRecord, Source

CHUNK = 256  # records per model call, as a worker's batch

# Optional per-record explanation: texts in, one JSON-able value per text out (added as
# "explanation" to each labelled record). `--explain` plugs in here.
Explain = Callable[[Bundle, Sequence[str]], list[Any]]


def _lines(fh: IO[bytes], source: str, key_field: str) -> Iterator[RawRecord]:
    """One record per non-empty line, its bytes unchanged (as `textstream send` sends them)."""
    for lineno, line in enumerate(fh, 1):
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield RawRecord(value, key_of(value, key_field), Source(source, 0, lineno))


def _csv(path: Path, key_field: str) -> Iterator[RawRecord]:
    """One JSON object per CSV row, its columns as fields (a row that is not UTF-8 stays bytes that
    are not, and the worker's decoding refuses it as invalid_utf8)."""
    from training.data import open_csv

    with open_csv(path) as reader:
        for row in reader:
            fields = {k: v for k, v in row.items() if k is not None}
            try:
                value = orjson.dumps(fields)
            except orjson.JSONEncodeError:  # surrogates: bytes that were not UTF-8
                value = ",".join(v or "" for v in fields.values()).encode("utf-8", "surrogateescape")
            yield RawRecord(value, key_of(value, key_field), Source(str(path), 0, reader.line_num))


def read_records(path: str, key_field: str = "id") -> Iterator[RawRecord]:
    """The records of a JSON Lines or plain-text file (one per non-empty line; '-': stdin) or a CSV
    or TSV file (one per row), optionally .gz. Each record's source is (FILE, 0, line number)."""
    from training.data import CSV_SUFFIXES, open_bytes

    if path == "-":
        yield from _lines(sys.stdin.buffer, "stdin", key_field)
        return
    file = Path(path)
    if file.name.lower().removesuffix(".gz").endswith(CSV_SUFFIXES):
        yield from _csv(file, key_field)
        return
    with open_bytes(file) as fh:
        yield from _lines(fh, path, key_field)


def score(bundle: Bundle, settings: config.Settings, records: Sequence[RawRecord],
          explain: Explain | None = None) -> list[dict[str, Any]]:
    """Per record, in input order: the worker's output record, or {"source", "error", "error_detail"}
    for one the worker would dead-letter."""
    from worker.pipeline import process

    result = process(bundle, settings, records)
    by_offset: dict[int, dict[str, Any]] = {}
    for out in result.outgoing:
        if out.topic == settings.output_topic and out.value is not None:
            record = orjson.loads(out.value)
            by_offset[record["source"]["offset"]] = record
    for rej in result.rejected:
        by_offset[rej.source.offset] = {
            "source": {"topic": rej.source.topic, "partition": rej.source.partition, "offset": rej.source.offset},
            "error": rej.reason, "error_detail": rej.detail}
    scored = [by_offset[r.source.offset] for r in records]
    if explain is not None:
        labelled = [s for s in scored if "error" not in s]
        for s, why in zip(labelled, explain(bundle, [s["text"] for s in labelled]), strict=True):
            s["explanation"] = why
    return scored


def table_row(s: dict[str, Any]) -> str:
    line = s["source"]["offset"]
    if "error" in s:
        return f"{line:>6}  {'-':<16} {'DEAD-LETTER':<14} {s['error']:<10}  {'':>7}  {snippet(s['error_detail'], 60)!r}"
    return (f"{line:>6}  {snippet(str(s['id']), 16):<16} {s['label']:<14} {s['confidence']:>10.4f}  "
            f"{s['cluster_id']:>7}  {snippet(s['text'], 60)!r}")


def explanation_line(why: dict[str, Any] | None) -> str:
    """An explanation under its table row: the top n-grams with their weights, the occlusion deltas."""
    if not why:
        return f"{'':>8}why: (this version cannot be explained)"
    parts = [f"{x['ngram']} {x['weight']:+.2f}" for x in why.get("linear", [])[:5]]
    shown = f"n-grams: {', '.join(parts)}" if parts else ""
    if why.get("lstm_occlusion"):
        occluded = ", ".join(f"{x['token']} {x['delta']:+.2f}" for x in why["lstm_occlusion"][:3])
        shown = f"{shown}; LSTM without: {occluded}" if shown else f"LSTM without: {occluded}"
    return f"{'':>8}why: {shown}"


TABLE_HEADER = f"{'line':>6}  {'id':<16} {'label':<14} {'confidence':>10}  {'cluster':>7}  text"


def cmd_predict(args: argparse.Namespace) -> int:
    settings = config.load_settings()
    logs.setup(settings.log_level, settings.log_format)
    from commands.models import model_dir
    from worker import bundle, registry

    root = model_dir(args)
    version = args.version if args.version is not None else registry.serving_version(root)
    bundle.prepare_runtime(settings)
    model = bundle.load(root / str(version))
    if not args.json:
        print(TABLE_HEADER)
    counts = {"labelled": 0, "dead-lettered": 0}
    chunk: list[RawRecord] = []

    from worker.explain import explain

    # With TEXTSTREAM_EXPLAIN=true the worker's own pipeline explains already.
    hook = partial(explain, tokens_tried=settings.explain_tokens) if args.explain and not settings.explain else None

    def flush() -> None:
        for s in score(model, settings, chunk, hook):
            counts["dead-lettered" if "error" in s else "labelled"] += 1
            print(orjson.dumps(s).decode() if args.json else table_row(s))
            if (args.explain or settings.explain) and not args.json and "error" not in s:
                print(explanation_line(s.get("explanation")))
        chunk.clear()

    for record in read_records(args.file, args.key_field):
        chunk.append(record)
        if len(chunk) >= CHUNK:
            flush()
    flush()
    print(f"version {version}: {counts['labelled']} labelled, {counts['dead-lettered']} would be dead-lettered",
          file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="label and cluster a file offline with a model version, as a worker would",
        description="Reads JSON Lines or plain text (one record per non-empty line, as `textstream send` sends "
                    "them) or CSV/TSV (one record per row, its columns as fields), optionally .gz, and runs "
                    "each record through the worker's own decode, predict and route steps with the given "
                    "version: a labelled record is the JSON a worker would publish (source: the file, "
                    "partition 0, the line number as offset); a refused one gives the dead-letter reason. "
                    "No Kafka needed.",
    )
    p.add_argument("file", help="the file to score ('-': stdin)")
    p.add_argument("--version", type=int, help="model version (default: the one workers serve: pinned, else highest)")
    p.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per record (the worker's output record, or source, error and error_detail)")
    p.add_argument("--explain", action="store_true",
                   help="add to each labelled record an `explanation`: the n-grams that pushed it to its label with "
                        "their exact weights, and the tokens whose removal from the LSTM's input lowers its "
                        "probability most (docs/models.md; TEXTSTREAM_EXPLAIN_TOKENS tokens tried)")
    p.add_argument("--key-field", default="id", help="JSON field whose string value is the record key (default: id)")
    p.set_defaults(func=cmd_predict)
