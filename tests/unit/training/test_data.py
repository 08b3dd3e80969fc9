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


def test_other_field_names_and_numeric_labels(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"body": "a", "cat": 1}\n{"body": "b", "cat": 2}\n', encoding="utf-8")
    ds = load([f], text_field="body", label_field="cat")
    assert ds.texts == ["a", "b"] and ds.labels == ["1", "2"]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("label\ttext\nham\thello, there\nspam\twin now\n", encoding="utf-8")
    assert load([tsv]).texts == ["hello, there", "win now"]


def test_a_directory_of_per_class_folders_and_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sport").mkdir(parents=True)
    (root / "sport" / "001.txt").write_text("Cup final\n\nThe team won.", encoding="utf-8")
    (root / "sport" / "002.txt").write_text("Marathon record", encoding="utf-8")
    (root / "sport" / ".DS_Store").write_bytes(b"\x00")
    (root / "tech" / "deep").mkdir(parents=True)
    (root / "tech" / "deep" / "a.txt").write_text("New chip", encoding="utf-8")
    (root / "spam.txt").write_text("win a prize\n\nfree ringtones\n", encoding="utf-8")
    ds = load([root])
    assert ds.counts() == {"spam": 2, "sport": 2, "tech": 1}
    assert "Cup final\n\nThe team won." in ds.texts  # a file is one text, line breaks kept
    assert ds.skipped == 0


def test_undecodable_files_and_lines_in_a_directory_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "corpus"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.txt").write_text("fine", encoding="utf-8")
    (root / "a" / "bad.txt").write_bytes(b"caf\xe9")
    (root / "b.txt").write_bytes(b"good line\n\xff\xfe broken\nanother\n")
    with caplog.at_level(logging.WARNING):
        ds = load([root])
    assert ds.counts() == {"a": 1, "b": 2} and ds.skipped == 2
    assert ds.bad_rows == {str(root): ["a/bad.txt", "b.txt line 2"]}
    assert "a/bad.txt, b.txt line 2" in caplog.text


def test_unreadable_rows_are_skipped_and_reported_by_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "a", "label": "x"}\n{broken\n{"text": "", "label": "x"}\n[1]\n'
                  b'{"text": "b", "label": "y"}\n{"text": "c"}\n{"text": "caf\xe9", "label": "y"}\n'
                  b'{"text": "d", "label": true}\n')
    with caplog.at_level(logging.WARNING):
        ds = load([f])
    assert ds.texts == ["a", "b"] and ds.skipped == 6
    assert "lines 2, 3, 4, 6, 7, 8" in caplog.text
    csv = tmp_path / "d.csv"
    csv.write_bytes(b"text,label\nfine,x\n\xff bad,y\n,y\nok,y\n")
    ds = load([csv])
    assert ds.texts == ["fine", "ok"] and ds.bad_rows == {str(csv): ["line 3", "line 4"]}


def test_bad_rows_can_fail_the_run_with_their_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a", "label": "x"}\n{broken\n{"text": "b", "label": "y"}\n{"text": 3, "label": "y"}\n')
    with pytest.raises(DataError, match=r"2 unreadable rows \(lines 2, 4\).*--bad-rows skip"):
        load([f], bad_rows="fail")


def test_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty.jsonl: empty file"):
        load([empty])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="empty directory"):
        load([tmp_path / "nothing"])
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    with pytest.raises(DataError, match="at least two classes"):
        load([one])
    nolabel = tmp_path / "n.csv"
    nolabel.write_text("text,category\na,b\n")
    with pytest.raises(DataError, match="no 'label' column .*header: text, category.*--label-field"):
        load([nolabel])
    nolabel_json = tmp_path / "n.jsonl"
    nolabel_json.write_text('{"text": "a", "category": "x"}\n{"text": "b", "category": "y"}\n')
    with pytest.raises(DataError, match="no row has a 'label' field"):
        load([nolabel_json])
    with pytest.raises(DataError, match="no such file"):
        load([tmp_path / "nope.jsonl"])
    with pytest.raises(DataError, match="unknown format"):
        (tmp_path / "x.parquet").write_text("x")
        load([tmp_path / "x.parquet"])
    garbage = tmp_path / "g.jsonl"
    garbage.write_text("not json\nnor this\n")
    with pytest.raises(DataError, match="no usable rows"):
        load([garbage])


def test_a_text_of_several_fields_is_joined_as_the_worker_joins_them(tmp_path: Path) -> None:
    jl = tmp_path / "mail.jsonl"
    jl.write_text('{"subject": "Refund", "body": "Wrong invoice.", "label": "billing"}\n'
                  '{"subject": "", "body": "Cannot log in.", "label": "access"}\n', encoding="utf-8")
    csv = tmp_path / "mail.csv"
    csv.write_text('label,body,subject\nbilling,"Charged twice, please help",Payment\n', encoding="utf-8")
    ds = load([jl, csv], text_field=("subject", "body"))
    assert ds.texts == ["Refund\n\nWrong invoice.", "Cannot log in.", "Payment\n\nCharged twice, please help"]
    assert ds.labels == ["billing", "access", "billing"]


def test_rows_lacking_a_text_field_are_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jl = tmp_path / "mail.jsonl"
    jl.write_text('{"subject": "a", "body": "b", "label": "x"}\n{"body": "no subject", "label": "y"}\n'
                  '{"subject": null, "body": "b", "label": "y"}\n{"subject": "c", "body": "d", "label": "y"}\n',
                  encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = load([jl], text_field=("subject", "body"))
    assert ds.texts == ["a\n\nb", "c\n\nd"] and ds.skipped == 2
    assert "lines 2, 3" in caplog.text
    with pytest.raises(DataError, match="2 unreadable rows"):
        load([jl], text_field=("subject", "body"), bad_rows="fail")


def test_text_fields_the_data_lacks_are_refused_naming_the_field(tmp_path: Path) -> None:
    jl = tmp_path / "mail.jsonl"
    jl.write_text('{"subject": "a", "body": "b", "label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no row has a 'summary' field .*--text-field"):
        load([jl], text_field=("subject", "summary"))
    csv = tmp_path / "mail.csv"
    csv.write_text("subject,label\na,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'body' column .*--text-field"):
        load([csv], text_field=("subject", "body"))
    (tmp_path / "dir" / "x").mkdir(parents=True)
    (tmp_path / "dir" / "x" / "1.txt").write_text("a text")
    with pytest.raises(DataError, match="directory of text files has no fields.*JSON Lines or CSV"):
        load([tmp_path / "dir"], text_field=("subject", "body"))
