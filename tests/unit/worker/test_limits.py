"""worker/limits.py: record sizes as the broker counts them, and the limits derived from the cluster."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker import limits
from worker.config import load_settings
from worker.decode import decode
from worker.errors import ConfigError
from worker.limits import KAFKA_DEFAULT_MAX_MESSAGE_BYTES as KAFKA_DEFAULT
from worker.limits import ClusterLimits, Limits, batch_bytes
from worker.records import Prediction, RawRecord, Rejected, Source, TextMessage
from worker.route import dlq_headers, route

SRC = Source("texts.raw", 3, 41)
DEFAULTS = ClusterLimits(KAFKA_DEFAULT, KAFKA_DEFAULT, KAFKA_DEFAULT)


def built(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> int:
    """The size of the batch aiokafka's producer builds for this record alone."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 22)
    builder.append(0, timestamp=1_700_000_000_000, key=key, value=value, headers=headers)
    return len(builder.build())


@pytest.mark.parametrize("key,value,headers", [
    (None, b"", []), (b"k", b"v", [("h", b"x")]), (None, None, [("a", None)]),
    (b"k" * 200, b"v" * 70_000, [("h" * 130, b"x" * 20_000)] * 3), (None, b"x" * 1_048_400, []),
    (b"key", b"v" * 2_097_200, [(f"h{i}", b"1") for i in range(70)]),
])
def test_batch_bytes_is_the_size_aiokafka_builds(key: bytes | None, value: bytes | None,
                                                 headers: list[tuple[str, bytes | None]]) -> None:
    assert batch_bytes(key, value, headers) == built(key, value, headers)


@pytest.mark.parametrize("limit", [KAFKA_DEFAULT, 4096, 20_000, 8_388_608, 127 + 1400, 16_384 + 3])
def test_largest_value_is_the_edge_where_a_dead_letter_stops_fitting(limit: int) -> None:
    size = limits.largest_value(limit, "texts.raw")
    widest = list(limits.widest_reason_headers("texts.raw"))
    if size == 0:
        assert batch_bytes(None, b"", widest) > limit
        return
    assert batch_bytes(None, b"x" * size, widest) <= limit < batch_bytes(None, b"x" * (size + 1), widest)


def test_derived_limits_at_kafka_defaults() -> None:
    """Every dead letter of an input under the input limit fits the DLQ topic, whatever its reason."""
    settings = limits.derive(load_settings(), DEFAULTS)
    lim = Limits.of(settings)
    assert lim.dead_letter_bytes == lim.output_bytes == KAFKA_DEFAULT
    assert lim.text_bytes == limits.largest_value(KAFKA_DEFAULT, "texts.raw")
    assert 1_045_000 < lim.text_bytes < 1_048_400  # the reproduction's values are too large now
    assert lim.producer_max_request_size >= KAFKA_DEFAULT + limits.AIOKAFKA_RECORD_OVERHEAD
    assert lim.producer_batch_bytes == 524_288
    value = b"x" * lim.text_bytes
    assert lim.too_large(None, value, ()) is None
    assert lim.too_large(None, value + b"x", ()) is not None
    widest = Rejected("undecodable_record", "d" * 5000, value, Source("texts.raw", 2**31 - 1, 2**63 - 1))
    assert batch_bytes(None, value, dlq_headers(widest)) <= KAFKA_DEFAULT


def test_a_key_and_headers_count_against_the_input_limit() -> None:
    lim = Limits.of(limits.derive(load_settings(), DEFAULTS))
    value = b"x" * (lim.text_bytes - 500)
    assert lim.too_large(None, value, ()) is None
    assert lim.too_large(b"k" * 600, value, ()) is not None
    assert lim.too_large(None, value, (("trace", b"t" * 600),)) is not None
    detail = lim.too_large(b"k" * 600, value, ())
    assert detail is not None and "dead letter" in detail and str(KAFKA_DEFAULT) in detail


def test_user_limits_above_the_cluster_are_refused_naming_the_variable() -> None:
    fits = limits.largest_value(KAFKA_DEFAULT, "texts.raw")
    with pytest.raises(ConfigError, match=rf"TEXTSTREAM_MAX_TEXT_BYTES=1048576 is above {fits}.*texts.dlq"):
        limits.derive(load_settings(max_text_bytes=1_048_576), DEFAULTS)
    with pytest.raises(ConfigError, match=r"TEXTSTREAM_MAX_OUTPUT_BYTES=2000000 is above max.message.bytes=500000"):
        limits.derive(load_settings(max_output_bytes=2_000_000), ClusterLimits(KAFKA_DEFAULT, 500_000, KAFKA_DEFAULT))
    with pytest.raises(ConfigError, match=r"TEXTSTREAM_MAX_DEAD_LETTER_BYTES=2000000 is above max.message.bytes=1048588"):
        limits.derive(load_settings(max_dead_letter_bytes=2_000_000), DEFAULTS)
    with pytest.raises(ConfigError, match=r"dead-letter topic texts.dlq has max.message.bytes=3000"):
        limits.derive(load_settings(), ClusterLimits(3000, KAFKA_DEFAULT, KAFKA_DEFAULT))


def test_user_limits_below_the_cluster_are_kept_and_the_smallest_topic_wins() -> None:
    derived = limits.derive(load_settings(max_text_bytes=2000, max_output_bytes=50_000),
                            ClusterLimits(2_000_000, 900_000, 700_000))
    assert (derived.max_text_bytes, derived.max_output_bytes, derived.max_dead_letter_bytes) == (2000, 50_000, 2_000_000)
    derived = limits.derive(load_settings(), ClusterLimits(2_000_000, 900_000, 300_000))
    lim = Limits.of(derived)
    assert lim.output_bytes == 300_000  # label topics created later get the broker's default
    assert lim.producer_batch_bytes == 300_000  # a batch of several records must fit too
    assert lim.text_bytes == limits.largest_value(2_000_000, "texts.raw")


def test_unreadable_limits_fall_back_to_kafkas_default() -> None:
    lim = Limits.of(limits.derive(load_settings(), ClusterLimits(None, None, None, ("topic texts.dlq: denied",))))
    assert lim.dead_letter_bytes == lim.output_bytes == KAFKA_DEFAULT


def prediction() -> Prediction:
    return Prediction("sport", 0.9, {"sport": 0.9}, 1, 0.5)


def test_output_limit_counts_the_key() -> None:
    settings = limits.derive(load_settings(max_output_bytes=20_000), DEFAULTS)
    text = b"word " * 3500  # ~17.5 KB of text: the output fits alone, not with a 3 KB key
    for key, reason in ((None, None), (b"k" * 3000, "output_too_large")):
        rec = RawRecord(text, key, SRC)
        msg = decode(text, SRC, max_bytes=Limits.of(settings), key=key)
        assert isinstance(msg, TextMessage)
        result = route(settings, 1, [(rec, msg, prediction())], [], 1.0)
        assert [r.reason for r in result.rejected] == ([reason] if reason else [])
        for out in result.outgoing:
            assert batch_bytes(out.key, out.value, out.headers or []) <= 20_000 or out.topic == "texts.dlq"


@pytest.mark.parametrize("size", [1_048_400, 1_048_450, 1_048_500])
def test_an_input_whose_dead_letter_cannot_fit_is_dead_lettered_without_its_bytes(size: int) -> None:
    """The reproduction: at Kafka's defaults, plain text values the broker accepted. Their dead
    letter with the original bytes would be refused, so it goes without them, and fits."""
    settings = limits.derive(load_settings(), DEFAULTS)
    value = b"y" * size
    assert batch_bytes(None, value) <= KAFKA_DEFAULT  # the broker accepts the input
    rej = decode(value, SRC, max_bytes=Limits.of(settings))
    assert isinstance(rej, Rejected) and rej.reason == "too_large"
    (out,) = route(settings, 1, [], [rej], 1.0).outgoing
    headers = dict(out.headers or [])
    assert (out.value, out.key, headers["original_dropped"], headers["error"]) == (b"", None, b"true", b"too_large")
    assert headers["source_offset"] == b"41" and b"original not kept" in headers["error_detail"]
    assert batch_bytes(out.key, out.value, out.headers or []) <= KAFKA_DEFAULT


def test_an_input_just_over_the_limit_keeps_its_bytes_on_the_dlq() -> None:
    settings = limits.derive(load_settings(), DEFAULTS)
    value = b"y" * (Limits.of(settings).text_bytes + 1)
    rej = decode(value, SRC, max_bytes=Limits.of(settings), key=b"k", headers=(("h", b"1"),))
    assert isinstance(rej, Rejected) and rej.reason == "too_large"
    (out,) = route(settings, 1, [], [rej], 1.0).outgoing
    assert (out.value, out.key, (out.headers or [])[0]) == (value, b"k", ("h", b"1"))
    assert batch_bytes(out.key, out.value, out.headers or []) <= KAFKA_DEFAULT


def test_a_non_utf8_header_key_is_dead_lettered_as_undecodable_with_what_can_be_kept() -> None:
    bad = b"\xff\xfeh".decode("utf-8", "surrogateescape")  # how worker/fetching.py hands it over
    rej = decode(b"fine text", SRC, max_bytes=1000, key=b"k", headers=((bad, b"v"), ("ok", b"1")))
    assert isinstance(rej, Rejected) and rej.reason == "undecodable_record"
    assert (rej.value, rej.key) == (b"fine text", b"k")
    assert rej.headers == (("\ufffd\ufffdh", b"v"), ("ok", b"1"))
    assert r"b'\xff\xfeh'" in rej.detail
    for name, _ in dlq_headers(rej):
        name.encode("utf-8")  # every header can be produced


def test_a_keyless_tombstone_is_dead_lettered_with_an_empty_value() -> None:
    """aiokafka refuses to send a record with neither key nor value (an assertion that stopped the worker)."""
    rej = decode(None, SRC, max_bytes=1000)
    assert isinstance(rej, Rejected) and rej.reason == "tombstone"
    (out,) = route(load_settings(), 1, [], [rej], 1.0).outgoing
    assert (out.key, out.value, dict(out.headers or [])["error"]) == (None, b"", b"tombstone")
    keyed = decode(None, SRC, max_bytes=1000, key=b"k")
    assert isinstance(keyed, Rejected)
    (out,) = route(load_settings(), 1, [], [keyed], 1.0).outgoing
    assert (out.key, out.value) == (b"k", None)
