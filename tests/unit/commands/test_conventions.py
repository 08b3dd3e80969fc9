"""The command line's habits: --version, on/off flags' help, tail's start position, the log
settings, Excel's CSV, `train --check` and `train --json`."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from commands import clients
from commands.main import build_parser, main
from training.data import load
from worker.client import start_positions


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"textstream {importlib.metadata.version('textstream')}"


def test_no_on_off_flag_shows_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-announce said "(default: True)": an on/off flag's default only confuses."""
    checked = 0
    for name, parser in subparsers(build_parser()).items():
        formatter = parser._get_formatter()  # the command's own (train shows defaults)
        for action in parser._actions:
            if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
                shown = formatter._expand_help(action)  # the help line as --help prints it
                assert "(default: True)" not in shown and "(default: False)" not in shown, (name, shown)
                checked += 1
    assert checked >= 10  # every command's flags were looked at, --no-announce among them
    assert "--no-announce" in subparsers(build_parser())["train"].format_help()


def test_tail_reads_from_now_on_unless_from_beginning() -> None:
    parser = build_parser()
    assert parser.parse_args(["tail"]).from_beginning is False
    assert parser.parse_args(["tail", "--from-beginning"]).from_beginning is True
    found = {"texts.labeled": {0, 1}, "texts.dlq": {0}}
    start, end = start_positions(found, existing={"texts.labeled", "texts.dlq"}, from_beginning=False)
    assert start == [] and end == [TopicPartition("texts.labeled", 0), TopicPartition("texts.labeled", 1),
                                   TopicPartition("texts.dlq", 0)]
    # A topic created after tail started holds only records that arrived since: all of it is shown.
    start, end = start_positions(found, existing={"texts.labeled"}, from_beginning=False)
    assert start == [TopicPartition("texts.dlq", 0)] and len(end) == 2
    start, end = start_positions(found, existing={"texts.labeled"}, from_beginning=True)
    assert len(start) == 3 and end == []


@pytest.mark.parametrize("command", ["send", "tail"])
def test_send_and_tail_follow_the_log_settings(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake(*args: Any, **kwargs: Any) -> int:
        seen["root"] = logging.getLogger().level
        seen["json"] = type(logging.getLogger().handlers[0].formatter).__name__ == "JsonFormatter"
        return 0

    async def no_topics(*args: Any, **kwargs: Any) -> list[str]:
        return []

    monkeypatch.setenv("TEXTSTREAM_LOG_LEVEL", "error")
    monkeypatch.setenv("TEXTSTREAM_LOG_FORMAT", "json")
    monkeypatch.setattr("worker.client.send_values", fake)
    monkeypatch.setattr("worker.client.tail", fake)
    monkeypatch.setattr("worker.topics.ensure_topics", no_topics)
    monkeypatch.setattr(clients.sys, "stdin", type("In", (), {"buffer": iter([b"hello\n"])})())
    assert main([command]) == 0
    assert seen == {"root": logging.ERROR, "json": True}


def test_csv_saved_by_excel_with_a_bom_reads(tmp_path: Path) -> None:
    data = tmp_path / "excel.csv"
    data.write_bytes(b"\xef\xbb\xbftext,label\r\nthe match,sport\r\nthe phone,tech\r\n")
    ds = load([data])
    assert ds.texts == ["the match", "the phone"] and ds.labels == ["sport", "tech"]


def write_data(path: Path, per_label: int = 20) -> Path:
    rows = [{"text": f"{label} text number {i}", "label": label} for label in ("sport", "tech") for i in range(per_label)]
    rows.append({"text": "", "label": "sport"})
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def test_train_check_prints_counts_and_splits_without_training(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = write_data(tmp_path / "d.jsonl")
    models = tmp_path / "m"
    assert main(["train", "--check", "--data", str(data), "--model-dir", str(models), "--test-size", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "40 usable, 1 skipped" in out and "data OK" in out
    assert "30 fit" not in out  # 40 rows, 10 held out; 10 % of the 30 left for validation
    assert "27 fit, 3 validation" in out and "10 evaluation" in out
    assert any(line.split() == ["sport", "13", "2", "5"] for line in out.splitlines()), out
    assert not models.exists()  # nothing trained, nothing published

    assert main(["train", "--check", "--json", "--data", str(data), "--test-size", "0.25"]) == 0
    found = orjson.loads(capsys.readouterr().out)
    assert found["ok"] and found["splits"] == {"fit": 27, "validation": 3, "evaluation": 10}
    assert found["per_label"]["tech"] == {"fit": 14, "validation": 1, "evaluation": 5}
    assert found["skipped"] == 1 and found["labels"] == ["sport", "tech"]


def test_train_check_exits_1_on_unusable_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "one.csv"
    data.write_text("text,label\na,x\nb,x\n")
    assert main(["train", "--check", "--data", str(data)]) == 1
    assert "at least two classes" in capsys.readouterr().err
    assert main(["train", "--check", "--json", "--data", str(data)]) == 1
    out = orjson.loads(capsys.readouterr().out)
    assert out["ok"] is False and "at least two classes" in out["error"]


@pytest.mark.parametrize("published", [True, False])
def test_train_json_prints_one_object_on_stdout(published: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from training import gate
    from training.train import TrainResult

    decision = gate.decide(0.81, 0.9 if not published else None, 0.01, current_version=None if published else 2)
    metrics = {"accuracy": 0.8, "macro_f1": 0.81, "nmi": 0.5, "ari": 0.4, "purity": 0.7, "silhouette": 0.1}

    def fake_train(*args: Any, **kwargs: Any) -> TrainResult:
        print("a library printing on stdout")  # must not spoil the JSON
        return TrainResult(4 if published else None, metrics, 12.3, decision, {"classifier": 10.0})

    monkeypatch.setattr("training.train.train", fake_train)
    data = write_data(tmp_path / "d.jsonl")
    code = main(["train", "--data", str(data), "--model-dir", str(tmp_path / "m"), "--json", "--no-announce"])
    out = capsys.readouterr()
    assert code == (0 if published else 3)
    result = orjson.loads(out.out)  # stdout is exactly one JSON object
    assert result["published"] is published and result["version"] == (4 if published else None)
    assert result["metrics"] == metrics and result["gate"]["publish"] is published
    assert result["gate"]["new_f1"] == 0.81 and result["seconds"] == 12.3
    assert "quality gate" in out.err and "a library printing on stdout" in out.err
