"""Fault 3: two workers in one consumer group, one killed with SIGKILL mid-stream: its partitions
move to the survivor and nothing is lost (what the dead worker had taken but not committed is read
again by the survivor, so duplicates are possible and counted)."""

from __future__ import annotations

import time

import pytest

from tests.faults import accounting
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_end_to_end import valid_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

N = 8_000
RATE = 100.0  # records/s: the stream (80 s) outlasts the failover


def assigned(worker: object) -> list[str]:
    return list(worker.status()["assigned"])  # type: ignore[attr-defined]


def test_two_workers_one_killed_partitions_move_to_the_survivor(stack: Stack) -> None:
    started = time.monotonic()
    workers = [stack.start_worker(), stack.start_worker()]
    for w in workers:
        stack.wait_ready(w, timeout=180)
    wait_until(lambda: all(len(assigned(w)) == 2 for w in workers), 120, "partitions split 2 + 2")
    producer = accounting.Producer(stack.bootstrap, stack.raw, valid_records(N), RATE)
    collector = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq)
    victim, survivor = workers
    try:
        collector.wait_count(N // 4, timeout=300)
        assert producer.sent < N
        orphaned = {int(p.rsplit("/", 1)[1]) for p in assigned(victim)}
        killed_at, killed_mono = time.time(), time.monotonic()
        victim.proc.kill()
        victim.proc.wait(timeout=30)
        wait_until(lambda: len(assigned(survivor)) == 4, 180, f"the survivor takes all partitions\n{stack.logs()}")
        takeover_s = time.monotonic() - killed_mono

        def orphan_output() -> float | None:
            return min((r.timestamp for r in list(collector.records)
                        if r.timestamp > killed_at and accounting.source_of(r, stack.dlq)[0] in orphaned), default=None)

        wait_until(lambda: orphan_output() is not None, 120, "an output from the dead worker's partitions")
        resumed_s = (orphan_output() or killed_at) - killed_at
        producer.join(timeout=300)
        expected = accounting.input_keys(stack.bootstrap, stack.raw)
        assert len(expected) == N
        collector.wait_covered(expected, timeout=300)
        assert survivor.proc.poll() is None and survivor.get("/readyz")[0] == 200, stack.logs()
    finally:
        collector.stop()
    result = accounting.tally("2 workers, 1 killed", collector.records, expected, stack.dlq,
                              ids={f"ok-{i}" for i in range(N)}, takeover_s=round(takeover_s, 1),
                              orphaned_partitions_first_output_s=round(resumed_s, 1),
                              wall_s=round(time.monotonic() - started, 1))
    assert result.lost == 0 and result.ids_lost == 0, f"{result.line()}\n{stack.logs()}"
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()
