"""The byte budget for records held in memory (TEXTSTREAM_MAX_BUFFERED_BYTES), split over the three
places a consumed record waits, so that a burst of large records cannot take more than the budget:

- the labeller (`worker.publish`): from the backlog until Kafka acknowledged its outputs, half
  the budget, counted in bytes (key + value + headers of each record);
- Faust's stream buffer between the consumer and the agent, a quarter: Faust counts events, so
  its size is the quarter divided by the largest accepted input (TEXTSTREAM_MAX_TEXT_BYTES);
- aiokafka's fetches, a quarter: one fetch response buffered and one in flight, each at most an
  eighth of the budget (`fetch_max_bytes`, at most the protocol's 2 GiB - 1), and at most 1 MiB
  from one partition.

Each may go over by one record (a record larger than the rest of its share still comes, so a
single huge record cannot stop the worker). docs/operations.md turns this into the RSS bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import Settings
from worker.limits import Limits
from worker.records import RawRecord

FAUST_STREAM_BUFFER = 4096  # Faust's default stream_buffer_maxsize: never more than that
PARTITION_FETCH_BYTES = 1_048_576  # aiokafka's default max_partition_fetch_bytes: never more than that
# A FetchRequest's max_bytes is an int32: above it aiokafka cannot encode the request, and the
# consumer logs the error and never fetches (seen with a 64 GiB budget: fetch_max_bytes 8 GiB).
FETCH_MAX_BYTES = 2**31 - 1


@dataclass(frozen=True)
class Budget:
    labeller_bytes: int  # records from the backlog until their outputs are acknowledged
    stream_buffer: int  # Faust's stream_buffer_maxsize (events)
    fetch_max_bytes: int  # aiokafka: the most bytes one fetch response carries
    partition_fetch_bytes: int  # aiokafka: the most bytes one partition adds to a fetch response

    @classmethod
    def of(cls, settings: Settings) -> Budget:
        total = settings.max_buffered_bytes
        fetch = min(max(1, total // 8), FETCH_MAX_BYTES)
        return cls(
            labeller_bytes=total // 2,
            stream_buffer=max(1, min(FAUST_STREAM_BUFFER, (total // 4) // Limits.of(settings).text_bytes)),
            fetch_max_bytes=fetch,
            partition_fetch_bytes=min(PARTITION_FETCH_BYTES, fetch),
        )


def record_bytes(record: RawRecord) -> int:
    """What a consumed record weighs against the budget: its value, key and headers."""
    return (len(record.value or b"") + len(record.key or b"")
            + sum(len(k) + len(v) for k, v in record.headers))
