"""One batch through decode -> predict -> route: what each input yields, and when a batch fails."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from tests.unit.worker.fakes import fake_bundle
from tests.unit.worker.test_predict import TEXTS, messages
from worker import pipeline, predict
from worker.config import load_settings
from worker.records import Outgoing, RawRecord, Source


def test_batch_routes_labeled_records_and_dead_letters(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(max_text_bytes=500)
    records = [
        RawRecord(orjson.dumps({"id": "n1", "text": TEXTS[0], "lang": "en"}), b"key-1", Source("texts.raw", 2, 5)),
        RawRecord(TEXTS[1].encode(), None, Source("texts.raw", 1, 9)),
        RawRecord(b"\xff\xfe", b"key-3", Source("texts.raw", 0, 1), headers=(("h", b"v"),)),
        RawRecord(b"y" * 501, None, Source("texts.raw", 0, 2)),
    ]
    result = pipeline.process(tiny_bundle, settings, records)
    assert result.labeled == 2
    assert [r.reason for r in result.rejected] == ["invalid_utf8", "too_large"]
    by_topic: dict[str, list[Outgoing]] = {}
    for o in result.outgoing:
        by_topic.setdefault(o.topic, []).append(o)
    labeled = by_topic.pop("texts.labeled")
    dlq = by_topic.pop("texts.dlq")
    assert [orjson.loads(o.value or b"")["id"] for o in labeled] == ["n1", "texts.raw-1-9"]
    assert [o.key for o in labeled] == [b"key-1", None]
    first = orjson.loads(labeled[0].value or b"")
    assert first["lang"] == "en" and first["model_version"] == tiny_bundle.version
    assert first["source"] == {"topic": "texts.raw", "partition": 2, "offset": 5}
    # the routing copies are the same records, on the topic of their label
    routed = [o for outs in by_topic.values() for o in outs]
    assert sorted(o.value for o in routed) == sorted(o.value for o in labeled)  # type: ignore[type-var]
    for o in routed:
        assert o.topic == "texts.label." + orjson.loads(o.value or b"")["label"]
    assert [(o.value, o.key) for o in dlq] == [(b"\xff\xfe", b"key-3"), (b"y" * 501, None)]
    assert dict(dlq[0].headers or [])["error"] == b"invalid_utf8"
    assert (dlq[0].headers or [])[0] == ("h", b"v")


def test_an_output_over_the_limit_is_dead_lettered_with_the_input_bytes(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(max_text_bytes=100_000, max_output_bytes=20_000)
    nul_text = orjson.dumps({"id": "nul", "text": "a" + "\x00" * 5_000})  # each NUL is 6 bytes in JSON
    records = [RawRecord(nul_text, b"k", Source("texts.raw", 0, 1)),
               RawRecord(b"short text", None, Source("texts.raw", 0, 2))]
    result = pipeline.process(tiny_bundle, settings, records)
    assert result.labeled == 1
    assert [(r.reason, r.value, r.key) for r in result.rejected] == [("output_too_large", nul_text, b"k")]
    assert sum(o.topic == "texts.dlq" for o in result.outgoing) == 1


@pytest.mark.parametrize("depth", [254, 600, 1023])
def test_a_passthrough_field_too_deep_to_write_back_is_dead_lettered(tiny_bundle, depth: int) -> None:  # type: ignore[no-untyped-def]
    """orjson reads up to 1024 levels of nesting but writes at most 254: such an input used to make
    the batch raise (`pipeline.process`, then `batch.process`), which stopped the worker uncommitted,
    and the restarted worker met the same record again (a crash loop on one poison record; found by
    tests/faults/test_poison.py)."""
    deep = b'{"id": "deep", "text": "a fine text", "x": ' + b"[" * depth + b"]" * depth + b"}"
    records = [RawRecord(deep, b"k", Source("texts.raw", 0, 1)), RawRecord(b"short text", None, Source("texts.raw", 0, 2))]
    result = pipeline.process(tiny_bundle, load_settings(), records)
    assert result.labeled == 1
    assert [(r.reason, r.value, r.key) for r in result.rejected] == [("invalid_json", deep, b"k")]
    assert "cannot be written back" in result.rejected[0].detail


def test_an_input_the_model_fails_on_is_dead_lettered_and_the_rest_labelled(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    def infer(texts, *args):  # type: ignore[no-untyped-def]
        if any("poison" in t for t in texts):
            raise ValueError("cannot take this one")
        return tiny_bundle.infer(texts, *args)

    fussy = dataclasses.replace(tiny_bundle, infer=infer)
    records = [RawRecord(orjson.dumps({"id": f"r{i}", "text": t}), None, Source("texts.raw", 0, i))
               for i, t in enumerate([TEXTS[0], "a poison text", TEXTS[1]])]
    result = pipeline.process(fussy, load_settings(), records)
    assert [p.label for p in result.predictions] == [p.label for p in predict.predict(tiny_bundle, messages(TEXTS[:2]))]
    (rejected,) = result.rejected
    assert rejected.reason == "model_error" and rejected.value == records[1].value
    assert "ValueError: cannot take this one" in rejected.detail
    dlq = [o for o in result.outgoing if o.topic == load_settings().dlq_topic]
    assert [o.value for o in dlq] == [records[1].value]


def test_a_model_that_fails_on_everything_fails_the_batch(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    def infer(texts, *args):  # type: ignore[no-untyped-def]
        raise MemoryError("out of memory")

    broken = dataclasses.replace(tiny_bundle, infer=infer)
    records = [RawRecord(orjson.dumps({"text": TEXTS[0]}), None, Source("texts.raw", 0, 0))]
    with pytest.raises(MemoryError):  # nothing dead-lettered: the restart tries the batch again
        pipeline.process(broken, load_settings(), records)


def test_the_version_that_labels_a_batch_decides_its_text_fields() -> None:
    """A hot reload to a version trained on other fields changes how the next batch is decoded: the
    batch is decoded with the fields of the bundle that scores it, and dead-letters what lacks them."""
    mail = RawRecord(orjson.dumps({"id": "m", "subject": "sport", "body": "the match report"}), b"k",
                     Source("texts.raw", 0, 1))
    plain = RawRecord(orjson.dumps({"id": "p", "text": "a tech text"}), None, Source("texts.raw", 0, 2))
    settings = load_settings()

    on_text = pipeline.process(fake_bundle(), settings, [mail, plain])
    assert [(r.reason, r.value) for r in on_text.rejected] == [("missing_text", mail.value)]
    assert [p.label for p in on_text.predictions] == ["tech"]

    on_mail = pipeline.process(dataclasses.replace(fake_bundle(), text_fields=("subject", "body")), settings,
                               [mail, plain])
    assert [(r.reason, r.value) for r in on_mail.rejected] == [("missing_field", plain.value)]
    assert "'subject' is missing" in on_mail.rejected[0].detail
    assert [p.label for p in on_mail.predictions] == ["sport"]  # the subject counted
    labeled = [orjson.loads(o.value or b"") for o in on_mail.outgoing if o.topic == settings.output_topic]
    assert [(o["text"], o["subject"], o["body"]) for o in labeled] == [
        ("sport\n\nthe match report", "sport", "the match report")]
    dead = [dict(o.headers or []) for o in on_mail.outgoing if o.topic == settings.dlq_topic]
    assert [d["error"] for d in dead] == [b"missing_field"]
