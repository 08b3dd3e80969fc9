"""TEXTSTREAM_MAX_BUFFERED_BYTES split over the labeller, Faust's stream buffer and aiokafka's fetches."""

from __future__ import annotations

import pytest

from worker.budget import FAUST_STREAM_BUFFER, Budget, record_bytes
from worker.config import load_settings
from worker.errors import ConfigError
from worker.records import RawRecord, Source

MiB = 1_048_576


def test_the_default_budget_and_its_shares() -> None:
    budget = Budget.of(load_settings())
    assert load_settings().max_buffered_bytes == 256 * MiB
    assert budget.labeller_bytes == 128 * MiB
    assert budget.stream_buffer == 64  # 64 MiB of records of up to TEXTSTREAM_MAX_TEXT_BYTES (1 MiB)
    assert budget.fetch_max_bytes == 32 * MiB and budget.partition_fetch_bytes == MiB


@pytest.mark.parametrize(("total", "max_text", "stream_buffer"),
                         [(256 * MiB, 1000, FAUST_STREAM_BUFFER), (8 * MiB, 16 * MiB, 1), (64 * MiB, 4 * MiB, 4)])
def test_the_stream_buffer_holds_a_quarter_of_the_budget_in_records_of_the_largest_input(
        total: int, max_text: int, stream_buffer: int) -> None:
    budget = Budget.of(load_settings(max_buffered_bytes=total, max_text_bytes=max_text))
    assert budget.stream_buffer == stream_buffer  # at least 1, at most Faust's default
    assert budget.partition_fetch_bytes <= budget.fetch_max_bytes == total // 8


def test_the_largest_budget_still_makes_a_fetch_request_aiokafka_can_encode() -> None:
    from aiokafka.protocol.types import Int32  # the FetchRequest's max_bytes field

    budget = Budget.of(load_settings(max_buffered_bytes=64 * 1024 * MiB))  # the largest the variable takes
    assert budget.fetch_max_bytes == 2**31 - 1
    Int32.encode(budget.fetch_max_bytes)  # B/8 = 8 GiB raised here, in the consumer's fetch routine
    with pytest.raises(ValueError):
        Int32.encode(64 * 1024 * MiB // 8)


@pytest.mark.parametrize("value", ["1000", "-1", "lots", str(2**40)])
def test_a_bad_budget_stops_the_worker_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSTREAM_MAX_BUFFERED_BYTES", value)
    with pytest.raises(ConfigError, match="TEXTSTREAM_MAX_BUFFERED_BYTES"):
        load_settings()


def test_a_record_weighs_its_value_key_and_headers() -> None:
    rec = RawRecord(b"v" * 10, b"kk", Source("t", 0, 0), headers=(("h", b"123"),))
    assert record_bytes(rec) == 10 + 2 + 1 + 3
    assert record_bytes(RawRecord(None, None, Source("t", 0, 1))) == 0
