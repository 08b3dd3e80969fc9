"""Fault 1: `kill -9` the worker three times during a 20,000-record stream, restarting it each time,
with each processing guarantee.

at_least_once: nothing is lost: the offsets of a batch are committed only after Kafka acknowledged
all its outputs, so whatever a killed worker had taken but not committed is read again by its
successor. Duplicates (outputs of a batch whose commit the kill prevented) are allowed, counted and
reported: they carry the same id.

exactly_once: a `read_committed` consumer sees every input exactly once: what the killed worker had
published in its open transaction is aborted when its successor takes the partition. A
`read_uncommitted` consumer's view is reported beside it (it sees the aborted outputs too).
"""

from __future__ import annotations

import time

import pytest

from tests.faults import accounting
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_end_to_end import valid_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

N = 20_000
RATE = 150.0  # records/s: the stream lasts ~135 s, so each kill happens while records still arrive
KILL_AT = (0.2, 0.45, 0.7)  # fraction of the outputs seen when each kill happens


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_9_three_times_during_20000_records(stack: Stack, guarantee: str) -> None:
    started = time.monotonic()
    exactly_once = guarantee == "exactly_once"
    producer = accounting.Producer(stack.bootstrap, stack.raw, valid_records(N), RATE)
    collector = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq,
                                     isolation_level="read_committed" if exactly_once else "read_uncommitted")
    uncommitted = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq) if exactly_once else None
    recoveries: list[dict[str, float]] = []
    expected: set[accounting.Key] = set()
    env = {"TEXTSTREAM_PROCESSING_GUARANTEE": guarantee}
    try:
        worker = stack.start_worker(**env)
        for fraction in KILL_AT:
            collector.wait_count(int(N * fraction), timeout=300)
            assert producer.sent < N, "the stream ended before the kill: slow the producer down"
            killed_at, killed_mono = time.time(), time.monotonic()
            worker.proc.kill()  # SIGKILL: no shutdown, no commit, batch in flight abandoned
            worker.proc.wait(timeout=30)
            worker = stack.start_worker(**env)
            stack.wait_ready(worker, timeout=180)
            ready = time.monotonic() - killed_mono
            wait_until(lambda at=killed_at: collector.first_produced_after(at) is not None, 120,
                       f"output from the restarted worker\n{stack.logs()}")
            resumed = (collector.first_produced_after(killed_at) or killed_at) - killed_at
            recoveries.append({"ready_s": round(ready, 1), "first_output_s": round(resumed, 1)})
            # A slow or busy machine restarts slower: keep records arriving through the remaining
            # kills (each up to 1.5x the slowest recovery so far, + 10 s) by lowering the pace.
            slowest = max(r["first_output_s"] for r in recoveries)
            producer.last_at_least(1.5 * slowest * (len(KILL_AT) - len(recoveries)) + 10)
        producer.join(timeout=300)
        expected = accounting.input_keys(stack.bootstrap, stack.raw)
        assert len(expected) == N
        collector.wait_covered(expected, timeout=300)
        assert worker.proc.poll() is None, stack.logs()
    finally:
        collector.stop()
        if uncommitted is not None:
            uncommitted.stop()
    ids = {f"ok-{i}" for i in range(N)}
    result = accounting.tally(f"kill -9 worker x3, {guarantee}", collector.records, expected, stack.dlq,
                              ids=ids, recoveries=recoveries, isolation_level=collector.isolation_level,
                              wall_s=round(time.monotonic() - started, 1))
    assert result.lost == 0 and result.ids_lost == 0, f"{result.line()}\n{stack.logs()}"
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()
    assert result.duplicates == result.id_duplicates  # a duplicate is the same input, with the same id
    if uncommitted is not None:
        accounting.tally(f"kill -9 worker x3, {guarantee}", uncommitted.records, expected, stack.dlq, ids=ids,
                         isolation_level=uncommitted.isolation_level)  # reported: aborted outputs count there
        assert result.duplicates == 0, f"{result.line()}\n{stack.logs()}"
