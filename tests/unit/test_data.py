from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from training.data import load
from worker.errors import DataError


def test_jsonl_gz_and_csv_are_read(tmp_path: Path) -> None:
    jl = tmp_path / "a.jsonl.gz"
    with gzip.open(jl, "wt", encoding="utf-8") as fh:
        fh.write('{"text": "one", "label": "x"}\n\n{"text": "two", "label": "y"}\n')
    csv = tmp_path / "b.csv"
    csv.write_text('text,label\n"three, with comma",x\nfour,y\n', encoding="utf-8")
    ds = load([jl, csv])
    assert ds.texts == ["one", "two", "three, with comma", "four"]
    assert ds.labels == ["x", "y", "x", "y"]
    assert ds.counts() == {"x": 2, "y": 2}


def test_unreadable_rows_are_skipped_and_reported_by_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a", "label": "x"}\n{broken\n{"text": "", "label": "x"}\n[1]\n'
                 '{"text": "b", "label": "y"}\n{"text": "c"}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = load([f])
    assert ds.texts == ["a", "b"] and ds.skipped == 4
    assert "lines 2, 3, 4, 6" in caplog.text


def test_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no usable rows"):
        load([empty])
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    with pytest.raises(DataError, match="at least two classes"):
        load([one])
    nolabel = tmp_path / "n.csv"
    nolabel.write_text("text,category\na,b\n")
    with pytest.raises(DataError, match="'label'"):
        load([nolabel])
    with pytest.raises(DataError, match="no such file"):
        load([tmp_path / "nope.jsonl"])
    with pytest.raises(DataError, match="unknown format"):
        (tmp_path / "x.parquet").write_text("")
        load([tmp_path / "x.parquet"])
