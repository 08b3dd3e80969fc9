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
    pred = Prediction("sport", 0.9, {"sport": 0.9, "tech": 0.1}, 2, 0.75, cluster_terms=("match", "goal"))
    out = orjson.loads(encode_result(msg, pred, 7, 11.0))
    assert out == {
        "lang": "en", "id": "m-2", "label": "sport", "confidence": 0.9, "scores": {"sport": 0.9, "tech": 0.1},
        "cluster_id": 2, "cluster_similarity": 0.75, "cluster_terms": ["match", "goal"], "model_version": 7, "text": "t",
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



def _routed(settings_kw: dict[str, object], preds: list[Prediction]) -> tuple[list[tuple[str, dict[str, object]]],
                                                                              list[str]]:
    """(topic, decoded value) of every output of one batch of these predictions, and the reviewed labels."""
    settings = load_settings(**settings_kw)
    batch = []
    for i, pred in enumerate(preds):
        rec = RawRecord(orjson.dumps({"id": f"r{i}", "text": "t", "route": "forged", "explanation": "forged"}),
                        f"k{i}".encode(),
                        Source("texts.raw", 0, i))
        msg = decode(rec.value, rec.source, max_bytes=1000, key=rec.key)
        assert isinstance(msg, TextMessage)
        batch.append((rec, msg, pred))
    result = route(settings, 3, batch, [], processed_at=1.0)
    return [(o.topic, orjson.loads(o.value or b"")) for o in result.outgoing], result.reviewed


def pred(label: str, confidence: float) -> Prediction:
    return Prediction(label, confidence, {label: confidence}, 0, 0.5)


def test_a_record_under_the_threshold_goes_to_review_and_stays_on_the_enriched_topic() -> None:
    # The threshold is strict: a confidence equal to it keeps the label's topic.
    outputs, reviewed = _routed({"min_confidence": 0.6}, [pred("sport", 0.599999), pred("tech", 0.6)])
    assert [(t, o["id"]) for t, o in outputs] == [("texts.labeled", "r0"), ("texts.review", "r0"),
                                                  ("texts.labeled", "r1"), ("texts.label.tech", "r1")]
    assert outputs[0][1] == outputs[1][1]  # the same enriched record on both
    assert {k: outputs[0][1][k] for k in ("label", "route", "min_confidence")} == {
        "label": "sport", "route": "review", "min_confidence": 0.6}
    assert (outputs[2][1]["route"], outputs[2][1]["min_confidence"]) == ("label", 0.6)
    assert reviewed == ["sport"]


def test_a_label_s_own_threshold_overrides_the_default() -> None:
    outputs, reviewed = _routed({"min_confidence": 0.5, "min_confidence_by_label": "spam=0.9,ham=0"},
                                [pred("spam", 0.85), pred("ham", 0.1), pred("other", 0.45), pred("other", 0.55)])
    assert [t for t, _ in outputs[1::2]] == ["texts.review", "texts.label.ham", "texts.review", "texts.label.other"]
    assert [o["min_confidence"] for _, o in outputs[::2]] == [0.9, 0.0, 0.5, 0.5]
    assert reviewed == ["spam", "other"]


def test_a_per_label_threshold_alone_turns_the_route_on_for_that_label() -> None:
    outputs, reviewed = _routed({"min_confidence_by_label": '{"spam": 0.9}'}, [pred("spam", 0.8), pred("ham", 0.01)])
    assert [t for t, _ in outputs] == ["texts.labeled", "texts.review", "texts.labeled", "texts.label.ham"]
    assert reviewed == ["spam"]


def test_with_the_route_off_records_carry_no_route_fields_and_an_input_s_own_are_dropped() -> None:
    outputs, reviewed = _routed({}, [pred("sport", 0.01)])
    assert [t for t, _ in outputs] == ["texts.labeled", "texts.label.sport"]
    assert "route" not in outputs[0][1] and "min_confidence" not in outputs[0][1] and reviewed == []
    assert "explanation" not in outputs[0][1]  # nor an explanation the worker did not make


def test_the_review_topic_is_an_output_topic_only_when_the_route_is_on() -> None:
    assert "texts.review" not in output_topics(load_settings(), ["a"])
    assert output_topics(load_settings(min_confidence=0.7, review_topic="mail.unsure"), ["a"]) == [
        "texts.labeled", "texts.dlq", "mail.unsure", "texts.label.a"]
