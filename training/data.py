"""Labelled training data: JSON Lines, CSV (either optionally gzip'd) or a directory of per-class text files.

Directory layout (the label is the name):
    DIR/<label>/*.txt   one text per file (e.g. the BBC News archive as distributed)
    DIR/<label>.txt     one text per non-empty line

Rows without a usable text or label are reported with their line numbers, then skipped or, with
`bad_rows="fail"`, refused. An empty file, a missing label column and a single class are errors.
The text of a JSON or CSV row may be made of several fields (`text_field=("subject", "body")`),
joined as the worker joins them (worker/textfields.py); a row lacking one of them is unusable.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import orjson

from training.config import BadRows
from worker import textfields
from worker.errors import DataError
from worker.textfields import FieldProblem

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
Row = tuple[str, object, object]  # (where: "line 3" or a file name, text, label)


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    labels: list[str]
    sources: tuple[str, ...]
    skipped: int = 0
    bad_rows: dict[str, list[str]] = field(default_factory=dict)  # source → where its skipped rows are

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def _kind(path: Path) -> str:
    if path.is_dir():
        return "dir"
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(f"{path}: unknown format; use .jsonl or .csv (optionally .gz), or a directory of per-class text files")


def open_bytes(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _has_surrogates(value: object) -> bool:
    """True when a field came from bytes that are not UTF-8 (decoded with surrogateescape)."""
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _text(record: dict[str, object], fields: Sequence[str]) -> str | None:
    """The text `fields` make of a row, or None when one is absent or not a string."""
    try:
        return textfields.text_of(record, fields)
    except FieldProblem:
        return None


def _jsonl_rows(path: Path, text_fields: Sequence[str], label_field: str) -> Iterator[Row]:
    seen_label = False
    seen_text: set[str] = set()
    objects = 0
    with open_bytes(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)  # refuses invalid UTF-8 too
            except orjson.JSONDecodeError:
                yield f"line {lineno}", None, None
                continue
            if not isinstance(obj, dict):
                yield f"line {lineno}", None, None
                continue
            objects += 1
            seen_text.update(name for name in text_fields if name in obj)
            seen_label = seen_label or label_field in obj
            yield f"line {lineno}", _text(obj, text_fields), obj.get(label_field)
    unseen = [(label_field, "label")] if not seen_label else []
    unseen += [(name, "text") for name in text_fields if name not in seen_text]
    for name, flag in unseen:
        if objects:
            raise DataError(f"{path}: no row has a '{name}' field (choose the field with --{flag}-field)")


@contextlib.contextmanager
def open_csv(path: Path) -> Iterator[csv.DictReader[str]]:
    """A CSV (or .tsv, optionally .gz) file's rows as dicts, read from UTF-8 with or without a byte
    order mark (Excel's "CSV UTF-8" writes one: read as plain UTF-8, the first column's name would
    start with U+FEFF and match no field). Bytes that are not UTF-8 come through as surrogates
    (`_has_surrogates`)."""
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        yield csv.DictReader(fh, delimiter=delimiter)


def _csv_rows(path: Path, text_fields: Sequence[str], label_field: str) -> Iterator[Row]:
    with open_csv(path) as reader:
        fields = reader.fieldnames
        if fields is None:
            return
        for name, flag in (*((f, "text") for f in text_fields), (label_field, "label")):
            if name not in fields:
                raise DataError(f"{path}: no '{name}' column (header: {', '.join(fields)}); choose one with --{flag}-field")
        for row in reader:
            text, label = _text(row, text_fields), row.get(label_field)
            if _has_surrogates(text) or _has_surrogates(label):
                text = None
            yield f"line {reader.line_num}", text, label


def _dir_rows(path: Path) -> Iterator[Row]:
    """DIR/<label>/* (a text per file) and DIR/<label>.txt (a text per line); hidden entries ignored."""
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for doc in sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")):
                where = str(doc.relative_to(path))
                try:
                    yield where, doc.read_bytes().decode("utf-8"), entry.name
                except UnicodeDecodeError:
                    yield where, None, entry.name
        elif entry.is_file() and entry.suffix.lower() == ".txt":
            with entry.open("rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    where = f"{entry.name} line {lineno}"
                    try:
                        yield where, line.decode("utf-8").rstrip("\r\n"), entry.stem
                    except UnicodeDecodeError:
                        yield where, None, entry.stem


def _rows(path: Path, text_fields: Sequence[str], label_field: str) -> Iterator[Row]:
    kind = _kind(path)
    if kind == "dir":
        if tuple(text_fields) != textfields.DEFAULT:
            raise DataError(f"{path}: a directory of text files has no fields; text fields "
                            f"{', '.join(text_fields)} need JSON Lines or CSV data")
        return _dir_rows(path)
    if kind == "jsonl":
        return _jsonl_rows(path, text_fields, label_field)
    return _csv_rows(path, text_fields, label_field)


def _is_empty(path: Path) -> bool:
    if path.is_dir():
        return not any(not p.name.startswith(".") for p in path.iterdir())
    with open_bytes(path) as fh:
        return not any(line.strip() for line in fh)


def _shown(places: list[str], limit: int = 10) -> str:
    """'lines 2, 3, 9' for line numbers, else the places themselves; long lists are cut."""
    cut = places[:limit]
    more = f" … ({len(places)} in all)" if len(places) > limit else ""
    if all(p.startswith("line ") for p in cut):
        return ("lines " if len(places) > 1 else "line ") + ", ".join(p[5:] for p in cut) + more
    return ", ".join(cut) + more


def load(paths: Sequence[Path], text_field: str | Sequence[str] = "text", label_field: str = "label",
         bad_rows: BadRows = "skip", min_classes: int = 2) -> Dataset:
    """Read every source; rows without a non-empty string text and label are skipped and reported.

    `text_field`: the field, or the fields (joined as the worker joins them), a row's text is made of.
    `min_classes` is 2 for training data (a classifier needs two) and 1 for evaluation data.
    """
    fields = (text_field,) if isinstance(text_field, str) else tuple(text_field)
    if not paths:
        raise DataError("no training data given")
    texts: list[str] = []
    labels: list[str] = []
    bad: dict[str, list[str]] = {}
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        if _is_empty(path):
            raise DataError(f"{path}: {'empty directory' if path.is_dir() else 'empty file'}")
        places: list[str] = []
        for where, text, label in _rows(path, fields, label_field):
            if isinstance(label, int | float) and not isinstance(label, bool):
                label = str(label)
            if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label.strip():
                places.append(where)
                continue
            texts.append(text)
            labels.append(label.strip())
        if places:
            bad[str(path)] = places
            if bad_rows == "fail":
                raise DataError(f"{path}: {len(places)} unreadable rows ({_shown(places)}); "
                                "fix them or skip them with --bad-rows skip")
            logger.warning("%s: skipped %d unreadable rows (%s)", path, len(places), _shown(places))
    if not texts:
        raise DataError(f"no usable rows with {', '.join(repr(f) for f in fields)} and '{label_field}' in "
                        f"{', '.join(map(str, paths))}")
    distinct = set(labels)
    if len(distinct) < min_classes:
        raise DataError(f"need at least two classes to train a classifier, found only {sorted(distinct)}")
    skipped = sum(len(v) for v in bad.values())
    return Dataset(texts, labels, tuple(str(p) for p in paths), skipped, bad)
