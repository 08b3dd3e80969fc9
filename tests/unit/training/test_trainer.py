"""training/trainer.py's pure parts: what a fetched batch becomes, and when to train."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson

from training.config import TrainConfig
from training.data import load
from training.holdout import split_rows
from training.trainer import TrainerSettings, due, last_per_text, split_batch, split_files


def _rec(topic: str, offset: int, value: bytes | None, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, value=value, key=None, headers=(),
                           timestamp=1_700_000_000_000)


def test_a_batch_splits_into_corrections_dead_letters_texts_and_next_offsets() -> None:
    batch = split_batch([
        _rec("fb", 4, b'{"id": "m-1", "label": "spam"}'),
        _rec("fb", 5, b"oops"),
        _rec("labeled", 9, orjson.dumps({"id": "m-1", "text": "win money", "label": "ham"}), partition=2),
        _rec("labeled", 10, b"not an output", partition=2),  # not ours to judge: skipped, offset still moves
    ], "fb")
    assert [(c.key, c.label, c.at) for c in batch.corrections] == [("m-1", "spam", 1_700_000_000.0)]
    assert [why.reason for _, why in batch.dead] == ["invalid_json"]
    assert batch.texts == [("m-1", "win money")]
    assert batch.offsets == {("fb", 0): 6, ("labeled", 2): 11}


def test_training_is_due_on_enough_corrections_or_on_schedule_with_any_pending() -> None:
    s = TrainerSettings(trainer_min_corrections=10, trainer_interval=3600)
    assert due(10, since=1000.0, now=1001.0, settings=s)
    assert not due(9, since=1000.0, now=1001.0, settings=s)
    assert due(1, since=1000.0, now=4600.0, settings=s)
    assert not due(0, since=0.0, now=1e9, settings=s)  # nothing new: no training, however long ago


def test_the_held_out_slice_is_the_same_texts_in_every_training_and_a_scarce_label_stays_in_training() -> None:
    texts = [f"text number {i}" for i in range(400)] + ["rare one", "rare two"]
    labels = ["a"] * 200 + ["b"] * 200 + ["new", "new"]
    train, evaluation = split_rows(texts, labels, 0.15)
    assert sorted(train + evaluation) == list(range(402))
    assert 0.10 < len(evaluation) / 400 < 0.20
    assert {labels[i] for i in train} == {"a", "b", "new"} and "new" not in {labels[i] for i in evaluation}
    # More data later (a correction) moves no earlier text between the slices.
    train2, evaluation2 = split_rows([*texts, "a later correction"], [*labels, "a"], 0.15)
    assert set(evaluation) <= set(evaluation2) and set(train) <= set(train2)


def test_a_correction_replaces_the_base_row_with_the_same_text(tmp_path: Path) -> None:
    assert last_per_text(["a", "b", "a", "c", "b"]) == [2, 3, 4]
    base = tmp_path / "base.jsonl"
    base.write_text("".join(orjson.dumps({"text": f"mail number {i}", "label": "ham" if i % 2 else "spam"}).decode()
                            + "\n" for i in range(200)))
    corrections = [(f"mail number {i}", "urgent") for i in range(0, 200, 10)]
    train, evaluation = split_files([base], corrections, tmp_path, TrainConfig())
    rows = [orjson.loads(line) for path in (train, evaluation) for line in path.read_text().splitlines()]
    assert len(rows) == 200  # 20 corrected rows replaced, none added
    labels = {r["text"]: r["label"] for r in rows}
    assert len(labels) == 200
    assert all(labels[f"mail number {i}"] == "urgent" for i in range(0, 200, 10))
    assert labels["mail number 1"] == "ham" and labels["mail number 2"] == "spam"


def test_base_data_in_other_fields_keeps_them_and_corrections_join_in(tmp_path: Path) -> None:
    base = tmp_path / "mail.jsonl"
    base.write_text("".join(orjson.dumps({"subject": f"Invoice {i}", "body": f"Please pay bill {i}",
                                          "queue": "billing" if i % 2 else "support"}).decode() + "\n"
                            for i in range(100)))
    # Texts as the worker joined them, from the enriched topic.
    corrections = [("Invoice 3\n\nPlease pay bill 3", "urgent"), ("Server down\n\nNothing works", "urgent")]
    cfg = TrainConfig(text_field="subject,body", label_field="queue")
    files = split_files([base], corrections, tmp_path, cfg)
    ds = load(list(files), cfg.text_fields, cfg.label_field, "fail")  # what `train` reads, in the version's fields
    labels = dict(zip(ds.texts, ds.labels, strict=True))
    assert len(labels) == 101  # 100 base rows, one replaced, one new
    assert labels["Invoice 3\n\nPlease pay bill 3"] == "urgent" and labels["Server down\n\nNothing works"] == "urgent"
    assert labels["Invoice 4\n\nPlease pay bill 4"] == "support"
