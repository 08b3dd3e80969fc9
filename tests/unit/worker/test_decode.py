"""Stage 1: the input contract, every kind of bad input rejected with its original bytes."""

from __future__ import annotations

import orjson
import pytest

from worker.decode import decode, decode_records
from worker.records import RawRecord, Rejected, Source, TextMessage

SRC = Source("texts.raw", 3, 41)


def dec(value: bytes | None, limit: int = 20_000, **kw: object) -> TextMessage | Rejected:
    return decode(value, SRC, max_bytes=limit, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"x" * 20_001, "too_large"),
        (b"caf\xe9", "invalid_utf8"),
        (b"\xff\xfe\x00", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b'  {"text": "a"} trailing', "invalid_json"),
        (b'{"text": "lone \\ud800 surrogate"}', "invalid_json"),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "invalid_json"),  # deeper than the parser allows
        (b'{"body": "x"}', "missing_text"),
        (b'{"text": 7}', "text_not_string"),
        (b'{"text": null}', "text_not_string"),
        (b'{"text": ["a"]}', "text_not_string"),
        (b'{"text": "ok", "id": 12}', "invalid_id"),
        (b'{"text": "ok", "id": ""}', "invalid_id"),
        (b'{"text": ""}', "empty_text"),
        (b'{"text": " \\n\\t "}', "empty_text"),
        (b"", "empty_text"),
        (b"   \n", "empty_text"),
    ],
)
def test_bad_input_is_rejected_with_original_bytes(value: bytes | None, reason: str) -> None:
    out = dec(value, key=b"k1")
    assert isinstance(out, Rejected)
    assert out.reason == reason
    assert out.value == value  # unchanged, byte for byte
    assert out.key == b"k1"
    assert out.detail


def test_plain_text_is_the_whole_value_with_a_stable_id() -> None:
    out = dec(b"  Hello world \x00 with a NUL  ", key=b"k")
    assert isinstance(out, TextMessage)
    assert out.text == "  Hello world \x00 with a NUL  "
    assert out.id == "texts.raw-3-41"
    assert out.key == b"k"
    assert out.fields == {}


def test_plain_text_that_is_json_but_not_an_object_is_prose() -> None:
    out = dec(b'["a", "b"]')
    assert isinstance(out, TextMessage) and out.text == '["a", "b"]'


def test_json_object_keeps_id_and_passthrough_fields() -> None:
    out = dec(orjson.dumps({"id": "m-1", "text": "Stocks rallied", "lang": "en", "meta": {"a": [1, 2]},
                            "label": "spoofed"}))
    assert isinstance(out, TextMessage)
    assert (out.id, out.text) == ("m-1", "Stocks rallied")
    assert out.fields == {"lang": "en", "meta": {"a": [1, 2]}}  # own fields never pass through


def test_size_limit_is_inclusive() -> None:
    assert isinstance(dec(b"a" * 1000, limit=1000), TextMessage)
    assert isinstance(dec(b"a" * 1001, limit=1000), Rejected)


def test_a_batch_decodes_into_valid_and_rejected_records_in_order() -> None:
    records = [RawRecord(b"first text", b"k1", Source("texts.raw", 0, 1), timestamp=5.0),
               RawRecord(b'{"text": 1}', b"k2", Source("texts.raw", 0, 2), headers=(("h", b"v"),)),
               RawRecord(b'{"id": "x", "text": "second"}', None, Source("texts.raw", 1, 3)),
               RawRecord(None, b"k4", Source("texts.raw", 1, 4))]
    valid, rejected = decode_records(records, max_bytes=100, received_at=9.0)
    assert [(rec, msg.id, msg.text) for rec, msg in valid] == [(records[0], "texts.raw-0-1", "first text"),
                                                                (records[2], "x", "second")]
    assert [(m.key, m.received_at, m.timestamp) for _, m in valid] == [(b"k1", 9.0, 5.0), (None, 9.0, None)]
    assert [(r.reason, r.value, r.key, r.headers) for r in rejected] == [
        ("text_not_string", b'{"text": 1}', b"k2", (("h", b"v"),)), ("tombstone", None, b"k4", ())]


MAIL = ("subject", "body")


def test_a_version_on_subject_and_body_labels_both_joined_and_passes_them_through() -> None:
    out = dec(orjson.dumps({"id": "m-1", "subject": "Refund", "body": "My invoice is wrong.", "from": "a@b.c"}),
              text_fields=MAIL)
    assert isinstance(out, TextMessage)
    assert (out.id, out.text) == ("m-1", "Refund\n\nMy invoice is wrong.")
    assert out.fields == {"subject": "Refund", "body": "My invoice is wrong.", "from": "a@b.c"}
    empty_subject = dec(orjson.dumps({"subject": "", "body": "just a body"}), text_fields=MAIL)
    assert isinstance(empty_subject, TextMessage) and empty_subject.text == "just a body"


@pytest.mark.parametrize(
    ("value", "reason", "named"),
    [
        (b'{"body": "no subject", "text": "a text field is not enough"}', "missing_field", "'subject' is missing"),
        (b'{"subject": "no body"}', "missing_field", "'body' is missing"),
        (b'{"subject": null, "body": "b"}', "field_not_string", "'subject' is a NoneType"),
        (b'{"subject": "s", "body": {"html": "<p>"}}', "field_not_string", "'body' is a dict"),
        (b"plain text has no fields", "missing_field", "no 'subject' field"),
        (b'{"subject": " ", "body": ""}', "empty_text", "'subject', 'body'"),
    ],
)
def test_a_record_without_the_versions_text_fields_is_rejected_naming_the_field(
        value: bytes, reason: str, named: str) -> None:
    out = dec(value, key=b"k", text_fields=MAIL)
    assert isinstance(out, Rejected)
    assert (out.reason, out.value, out.key) == (reason, value, b"k")
    assert named in out.detail, out.detail
    if reason != "empty_text":
        assert "built from 'subject', 'body'" in out.detail


def test_a_batch_is_decoded_with_the_text_fields_it_is_given() -> None:
    records = [RawRecord(b'{"subject": "s", "body": "b"}', None, Source("texts.raw", 0, 1)),
               RawRecord(b'{"text": "t"}', None, Source("texts.raw", 0, 2))]
    valid, rejected = decode_records(records, max_bytes=100, received_at=0.0, text_fields=MAIL)
    assert [msg.text for _, msg in valid] == ["s\n\nb"]
    assert [r.reason for r in rejected] == ["missing_field"]
    valid, rejected = decode_records(records, max_bytes=100, received_at=0.0)  # the default: the field `text`
    assert [msg.text for _, msg in valid] == ["t"]
    assert [r.reason for r in rejected] == ["missing_text"]
