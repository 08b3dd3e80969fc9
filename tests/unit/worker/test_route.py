"""Stage 4: the output contract, the label topics and the dead-letter headers."""

from __future__ import annotations

import orjson

from worker.config import load_settings
from worker.decode import decode
from worker.records import Prediction, RawRecord, Rejected, Source, TextMessage
from worker.route import dlq_headers, encode_result, output_topics, route

SRC = Source("texts.raw", 3, 41)


def dec(value: bytes | None, limit: int = 20_000, **kw: object) -> TextMessage | Rejected:
    return decode(value, SRC, max_bytes=limit, **kw)  # type: ignore[arg-type]


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


def test_output_topics_cover_every_label(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    topics = output_topics(load_settings(), tiny_bundle.labels)
    assert topics[:2] == ["texts.labeled", "texts.dlq"]
    assert {f"texts.label.{x}" for x in tiny_bundle.labels} == set(topics[2:])


def test_route_sends_predictions_to_labeled_and_their_label_topic_and_the_rest_to_the_dlq() -> None:
    settings = load_settings()
    ok = RawRecord(b"a text", b"k1", Source("texts.raw", 0, 1))
    failing = RawRecord(b"other text", b"k2", Source("texts.raw", 0, 2), headers=(("h", b"v"),))
    earlier = Rejected("tombstone", "record value is null", None, Source("texts.raw", 0, 0))
    msg_ok, msg_failing = (decode(r.value, r.source, max_bytes=100, key=r.key) for r in (ok, failing))
    assert isinstance(msg_ok, TextMessage) and isinstance(msg_failing, TextMessage)
    pred = Prediction("sport", 0.9, {"sport": 0.9, "tech": 0.1}, 2, 0.75)
    result = route(settings, 4, [(ok, msg_ok, pred), (failing, msg_failing, ValueError("boom"))], [earlier],
                   processed_at=11.0)
    assert [(o.topic, o.key) for o in result.outgoing] == [
        ("texts.labeled", b"k1"), ("texts.label.sport", b"k1"), ("texts.dlq", None), ("texts.dlq", b"k2")]
    assert result.outgoing[0].value == result.outgoing[1].value == encode_result(msg_ok, pred, 4, 11.0)
    assert result.predictions == [pred] and result.labeled == 1 and result.model_version == 4
    assert [(r.reason, r.value, r.key) for r in result.rejected] == [("tombstone", None, None),
                                                                    ("model_error", b"other text", b"k2")]
    assert "ValueError: boom" in result.rejected[1].detail
    assert result.outgoing[3].headers == dlq_headers(result.rejected[1])
    assert (result.outgoing[3].headers or [])[0] == ("h", b"v")  # the input's own headers come first

