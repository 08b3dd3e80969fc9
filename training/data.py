"""Labelled training data: JSON Lines or CSV (optionally gzip'd) with a text and a label per row."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from worker.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    labels: list[str]
    sources: tuple[str, ...]
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _rows(path: Path, text_field: str, label_field: str) -> Iterator[tuple[int, object, object]]:
    """(line number, text, label) for each row; missing fields come back as None."""
    name = path.name.removesuffix(".gz")
    with _open_text(path) as fh:
        if name.endswith(".csv"):
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or text_field not in reader.fieldnames or label_field not in reader.fieldnames:
                raise DataError(f"{path}: CSV header must have '{text_field}' and '{label_field}' columns, has {reader.fieldnames}")
            for row in reader:
                yield reader.line_num, row.get(text_field), row.get(label_field)
        elif name.endswith((".jsonl", ".json", ".ndjson")):
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield lineno, None, None
                    continue
                if not isinstance(obj, dict):
                    yield lineno, None, None
                    continue
                yield lineno, obj.get(text_field), obj.get(label_field)
        else:
            raise DataError(f"{path}: unknown format; use .jsonl, .csv (optionally .gz)")


def load(paths: Sequence[Path], text_field: str = "text", label_field: str = "label") -> Dataset:
    """Read every file; rows without a non-empty string text and label are skipped and reported."""
    texts: list[str] = []
    labels: list[str] = []
    skipped = 0
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        bad_lines: list[int] = []
        for lineno, text, label in _rows(path, text_field, label_field):
            if isinstance(label, int | float) and not isinstance(label, bool):
                label = str(label)
            if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label.strip():
                bad_lines.append(lineno)
                continue
            texts.append(text)
            labels.append(label.strip())
        if bad_lines:
            shown = ", ".join(map(str, bad_lines[:10])) + (" …" if len(bad_lines) > 10 else "")
            logger.warning("%s: skipped %d unreadable rows (lines %s)", path, len(bad_lines), shown)
            skipped += len(bad_lines)
    if not texts:
        raise DataError(f"no usable rows with '{text_field}' and '{label_field}' in {', '.join(map(str, paths))}")
    distinct = set(labels)
    if len(distinct) < 2:
        raise DataError(f"need at least two classes to train a classifier, found only {sorted(distinct)}")
    return Dataset(texts, labels, tuple(str(p) for p in paths), skipped)
