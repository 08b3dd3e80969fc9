from __future__ import annotations

import orjson
import pytest

from worker.codec import Prediction, Rejected, Source, TextMessage, decode, dlq_headers, encode_result

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


def test_encode_result_has_the_output_contract() -> None:
    msg = dec(orjson.dumps({"id": "m-2", "text": "t", "lang": "en"}), received_at=10.0)
    assert isinstance(msg, TextMessage)
    pred = Prediction("sport", 0.9, {"sport": 0.9, "tech": 0.1}, 2, 0.75)
    out = orjson.loads(encode_result(msg, pred, 7, 11.0))
    assert out == {
        "lang": "en", "id": "m-2", "label": "sport", "confidence": 0.9, "scores": {"sport": 0.9, "tech": 0.1},
        "cluster_id": 2, "cluster_similarity": 0.75, "model_version": 7, "text": "t",
        "source": {"topic": "texts.raw", "partition": 3, "offset": 41},
        "received_at": 10.0, "processed_at": 11.0,
    }


def test_dlq_headers_carry_reason_and_provenance_after_original_headers() -> None:
    rej = dec(b'{"text": 1}', headers=(("trace", b"abc"),))
    assert isinstance(rej, Rejected)
    headers = dlq_headers(rej)
    assert headers[0] == ("trace", b"abc")
    assert dict(headers[1:]) == {
        "error": b"text_not_string", "error_detail": b"'text' is a int", "source_topic": b"texts.raw",
        "source_partition": b"3", "source_offset": b"41",
    }
