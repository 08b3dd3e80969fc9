"""training/corrections.py: what a correction is, and the store that survives restarts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from training.corrections import BadCorrection, Correction, Store, parse, text_key


@pytest.mark.parametrize(("value", "key", "label", "text"), [
    (b'{"id": "m-1", "label": "billing"}', "m-1", "billing", None),
    (b'{"text": "refund please", "label": " billing "}', text_key("refund please"), "billing", "refund please"),
    (b'{"id": "m-2", "text": "hi", "label": "urgent", "extra": 1}', "m-2", "urgent", "hi"),
    ('{"id": "c-1", "label": "体育"}'.encode(), "c-1", "体育", None),  # any label: topics make it safe
])
def test_a_correction_is_an_id_or_a_text_with_a_label(value: bytes, key: str, label: str, text: str | None) -> None:
    assert parse(value, 5.0) == Correction(key, label, text, 5.0)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"),
    (b"\xff not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'{"id": "m-1"}', "missing_label"),
    (b'{"id": "m-1", "label": "  "}', "missing_label"),
    (b'{"id": "m-1", "label": 3}', "missing_label"),
    (orjson.dumps({"id": "m-1", "label": "x" * 201}), "invalid_label"),
    (orjson.dumps({"id": "m-1", "label": "体" * 41}), "invalid_label"),  # 5 characters each in a topic name
    (b'{"id": "", "label": "a"}', "invalid_id"),
    (b'{"id": 7, "label": "a"}', "invalid_id"),
    (b'{"text": " ", "label": "a"}', "empty_text"),
    (b'{"label": "a"}', "missing_text"),
])
def test_anything_else_is_refused_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadCorrection) as caught:
        parse(value, 0.0)
    assert caught.value.reason == reason


def _store(tmp_path: Path, **bounds: float) -> Store:
    return Store(tmp_path / "state" / "trainer.sqlite", **bounds)  # type: ignore[arg-type]


def test_the_newest_correction_of_an_id_wins_and_counts_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.apply([Correction("m-1", "spam", "win money", 1.0)], [], {("fb", 0): 1}, now=10.0)
    store.apply([Correction("m-1", "ham", None, 2.0)], [], {("fb", 0): 2}, now=10.0)
    assert list(store.ready()) == [("win money", "ham")]  # the label changed, the known text stayed
    assert store.counts().corrections == 1


def test_an_id_only_correction_waits_for_its_text_from_either_side(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.apply([], [("m-1", "the text of m-1")], {("labeled", 0): 1}, now=10.0)
    store.apply([Correction("m-1", "billing", None, 1.0), Correction("m-2", "urgent", None, 1.0)], [],
                {("fb", 0): 2}, now=10.0)
    assert list(store.ready()) == [("the text of m-1", "billing")]
    assert store.counts().ready == 1 and store.counts().corrections == 2
    store.apply([], [("m-2", "the text of m-2")], {("labeled", 0): 2}, now=10.0)  # the text came later
    assert sorted(store.ready()) == [("the text of m-1", "billing"), ("the text of m-2", "urgent")]


def test_a_restart_resumes_from_the_stored_offsets_with_the_same_state(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.apply([Correction("a", "x", "t", 1.0)], [("m", "text")], {("fb", 0): 7, ("labeled", 3): 11}, now=10.0)
    store.close()
    again = _store(tmp_path)
    assert again.offsets() == {("fb", 0): 7, ("labeled", 3): 11}
    assert list(again.ready()) == [("t", "x")] and again.counts().texts == 1


def test_a_failed_batch_stores_nothing_not_even_its_offsets(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.apply([Correction("a", "x", "t", 1.0)], [], {("fb", 0): 1}, now=10.0)

    def texts():  # type: ignore[no-untyped-def]
        yield "m-1", "fine"
        raise OSError("disk gone")

    with pytest.raises(OSError):
        store.apply([Correction("b", "y", "u", 1.0)], texts(), {("fb", 0): 2}, now=10.0)
    assert store.offsets() == {("fb", 0): 1} and list(store.ready()) == [("t", "x")] and store.counts().texts == 0


def test_bounds_keep_the_newest_and_retention_drops_the_old(tmp_path: Path) -> None:
    store = _store(tmp_path, max_corrections=3, max_texts=2, retention_days=1)
    day = 86400.0
    store.apply([Correction(f"k{i}", "x", f"t{i}", 10 * day + i) for i in range(5)],
                [(f"m{i}", "text") for i in range(4)], {}, now=10 * day)
    assert [t for t, _ in store.ready()] == ["t2", "t3", "t4"] and store.counts().texts == 2
    store.apply([Correction("old", "x", "told", 8 * day)], [], {}, now=10 * day)  # older than a day
    assert "told" not in [t for t, _ in store.ready()]


def test_pending_counts_what_arrived_since_the_last_training_and_a_snapshot_holds_the_training_rows(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.apply([Correction("a", "x", "ta", 1.0), Correction("b", "y", None, 1.0)], [], {}, now=10.0)
    assert store.counts().pending == 1  # b has no text yet
    rows, seq = store.snapshot()
    assert rows == [("ta", "x")]
    store.trained(seq, at=20.0)
    assert store.counts().pending == 0 and store.last_training() == 20.0
    store.apply([Correction("a", "z", None, 3.0)], [], {}, now=10.0)  # a new label for a: pending again
    assert store.counts().pending == 1
