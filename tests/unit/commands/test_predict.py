"""`textstream predict FILE`: the file's records, scored by the worker's own pipeline."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from commands.main import main
from commands.predict import read_records, score
from tests.factories import NEWS, copy_registry
from tests.unit.worker.fakes import fake_bundle
from worker import client, config
from worker.bundle import Bundle
from worker.pipeline import process
from worker.records import RawRecord, Source

LINES = [b'{"id": "a", "text": "sport tonight", "lang": "en"}', b"", b"plain tech text",
         b'{"id": "b", "body": "no text"}', b"bad \xff utf-8", b'{"id": "c", "text": "more sport"}']


def settings() -> config.Settings:
    return config.Settings(max_text_bytes=2000)


def timeless(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("received_at", "processed_at")}


def test_lines_are_the_records_send_would_send(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    records = list(read_records(str(path)))
    with path.open("rb") as fh:
        sent = list(client.read_lines(fh))
    assert [r.value for r in records] == sent  # bytes unchanged, blank lines left out
    assert [r.key for r in records] == [client.key_of(v, "id") for v in sent]
    assert [r.source.offset for r in records] == [1, 3, 4, 5, 6]  # line numbers
    gz = tmp_path / "in.txt.gz"
    gz.write_bytes(gzip.compress(b"one\r\ntwo\n"))
    assert [r.value for r in read_records(str(gz))] == [b"one", b"two"]


def test_csv_rows_become_json_objects(tmp_path: Path) -> None:
    path = tmp_path / "mail.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text,queue\r\nm1,\"sport, tonight\",a\r\nm2,tech,b\r\n")  # Excel's BOM
    records = list(read_records(str(path)))
    assert [orjson.loads(r.value or b"") for r in records] == [{"id": "m1", "text": "sport, tonight", "queue": "a"},
                                                                {"id": "m2", "text": "tech", "queue": "b"}]
    assert [r.key for r in records] == [b"m1", b"m2"] and [r.source.offset for r in records] == [2, 3]


def test_score_equals_what_the_worker_publishes_in_input_order(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(LINES))
    records = list(read_records(str(path)))
    bundle = fake_bundle()
    scored = score(bundle, settings(), records)
    assert [s["source"]["offset"] for s in scored] == [1, 3, 4, 5, 6]
    assert [s.get("label") or s["error"] for s in scored] == ["sport", "tech", "missing_text", "invalid_utf8", "sport"]
    published = [orjson.loads(o.value or b"") for o in process(bundle, settings(), records).outgoing
                 if o.topic == settings().output_topic]
    assert [timeless(s) for s in scored if "label" in s] == [timeless(p) for p in published]
    assert scored[0]["lang"] == "en" and scored[0]["model_version"] == 3 and scored[0]["confidence"] == 0.75


def test_the_explain_hook_adds_an_explanation_to_labelled_records(tmp_path: Path) -> None:
    records = [RawRecord(b"sport a", None, Source("f", 0, 1)), RawRecord(b"", None, Source("f", 0, 2)),
               RawRecord(b"tech b", None, Source("f", 0, 3))]

    def explain(bundle: Bundle, texts: Sequence[str]) -> list[Any]:
        return [{"words": t.split()} for t in texts]

    scored = score(fake_bundle(), settings(), records, explain=explain)
    assert [s.get("explanation") for s in scored] == [{"words": ["sport", "a"]}, None, {"words": ["tech", "b"]}]


def test_predict_with_a_real_version_as_json_and_as_a_table(tiny_registry: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    reg = copy_registry(tiny_registry, tmp_path / "r")
    path = tmp_path / "news.jsonl"
    lines = [orjson.dumps({"id": f"n{i}", "text": t}) for i, t in enumerate(NEWS)] + [b'{"id": "x", "text": ""}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["predict", str(path), "--model-dir", str(reg), "--json"]) == 0  # the served version
    out = capsys.readouterr()
    scored = [orjson.loads(line) for line in out.out.splitlines()]
    assert [s["id"] for s in scored[:-1]] == [f"n{i}" for i in range(len(NEWS))]
    assert scored[-1]["error"] == "empty_text"
    assert f"{len(NEWS)} labelled, 1 would be dead-lettered" in out.err

    from worker import bundle

    loaded = bundle.load(reg / "1")
    published = [orjson.loads(o.value or b"") for o in process(loaded, config.load_settings(), list(read_records(str(path)))).outgoing
                 if o.topic == config.load_settings().output_topic]
    assert [timeless(s) for s in scored[:-1]] == [timeless(p) for p in published]

    assert main(["predict", str(path), "--model-dir", str(reg), "--version", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["line", "id", "label", "confidence", "cluster", "text"]
    assert table[1].split()[:3] == ["1", "n0", scored[0]["label"]]
    assert "DEAD-LETTER" in table[-1] and "empty_text" in table[-1]
    assert main(["predict", str(path), "--model-dir", str(reg), "--version", "7"]) == 2


def test_predict_explain_gives_each_labelled_record_its_explanation(tiny_registry: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps({"id": "n0", "text": NEWS[0]}), b'{"id": "x", "text": ""}']) + b"\n")
    assert main(["predict", str(path), "--model-dir", str(tiny_registry), "--json", "--explain"]) == 0
    labelled, dead = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    why = labelled["explanation"]
    assert why["label"] == labelled["label"] and why["linear"] and "lstm_occlusion" in why
    assert sum(x["weight"] for x in why["linear"]) + why["linear_rest"] + why["linear_bias"] == \
        pytest.approx(why["linear_logit"], rel=2e-6, abs=1e-4)
    assert "explanation" not in dead and dead["error"] == "empty_text"
    assert main(["predict", str(path), "--model-dir", str(tiny_registry), "--explain"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[:2] == ["why:", "n-grams:"] and why["linear"][0]["ngram"] in table[2]
    assert "DEAD-LETTER" in table[3]
