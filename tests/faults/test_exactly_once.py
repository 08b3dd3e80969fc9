"""Exactly-once (TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once) through group changes: a worker joining
and one leaving, and a zombie (a worker paused with SIGSTOP past its session timeout, then resumed).
A `read_committed` consumer must see every input exactly once; a `read_uncommitted` consumer's view
is reported beside it. kill -9 and broker SIGKILL in exactly-once mode are in test_worker_kill.py and
test_broker_restart.py."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.faults import accounting
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_end_to_end import valid_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EXACTLY_ONCE = {"TEXTSTREAM_PROCESSING_GUARANTEE": "exactly_once"}
N = 8_000
RATE = 100.0  # records/s: the stream (80 s) outlasts each group change


def assigned(worker: object) -> list[str]:
    return list(worker.status()["assigned"])  # type: ignore[attr-defined]


def run_stream(stack: Stack, name: str, during: Callable[[accounting.Collector], dict[str, object]]) -> None:
    """Stream N records through the stack's workers while `during` changes the group; then count
    what a read_committed and a read_uncommitted consumer saw."""
    started = time.monotonic()
    producer = accounting.Producer(stack.bootstrap, stack.raw, valid_records(N), RATE)
    committed = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq, isolation_level="read_committed")
    uncommitted = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq)
    try:
        extra = during(committed)
        producer.join(timeout=300)
        expected = accounting.input_keys(stack.bootstrap, stack.raw)
        assert len(expected) == N
        committed.wait_covered(expected, timeout=300)
        assert any(w.alive for w in stack.workers), stack.logs()
    finally:
        committed.stop()
        uncommitted.stop()
    ids = {f"ok-{i}" for i in range(N)}
    result = accounting.tally(name, committed.records, expected, stack.dlq, ids=ids, isolation_level="read_committed",
                              wall_s=round(time.monotonic() - started, 1), **extra)
    accounting.tally(name, uncommitted.records, expected, stack.dlq, ids=ids, isolation_level="read_uncommitted")
    assert result.lost == 0 and result.ids_lost == 0, f"{result.line()}\n{stack.logs()}"
    assert result.duplicates == 0 and result.id_duplicates == 0, f"{result.line()}\n{stack.logs()}"
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()


def test_a_worker_joins_and_one_leaves_mid_stream(stack: Stack) -> None:
    first = stack.start_worker(**EXACTLY_ONCE)
    stack.wait_ready(first, timeout=180)
    assert "guarantee=exactly_once" in first.log.read_text(errors="replace")  # the start line says which

    def during(collector: accounting.Collector) -> dict[str, object]:
        collector.wait_count(N // 5, timeout=300)
        second = stack.start_worker(**EXACTLY_ONCE)
        stack.wait_ready(second, timeout=180)
        wait_until(lambda: len(assigned(first)) == 2 and len(assigned(second)) == 2, 120,
                   f"partitions split 2 + 2\n{stack.logs()}")
        joined_at = collector.count
        collector.wait_count(joined_at + N // 5, timeout=300)
        assert stack.stop_worker(first) == 0, stack.logs()  # leaves the group cleanly (SIGTERM)
        wait_until(lambda: len(assigned(second)) == 4, 120, f"the remaining worker takes all partitions\n{stack.logs()}")
        return {"outputs_when_joined": joined_at, "outputs_when_left": collector.count}

    run_stream(stack, "exactly_once: a worker joins, one leaves", during)


def test_a_zombie_worker_paused_past_its_session_timeout_is_fenced(stack: Stack) -> None:
    zombie, survivor = stack.start_worker(**EXACTLY_ONCE), stack.start_worker(**EXACTLY_ONCE)
    for w in (zombie, survivor):
        stack.wait_ready(w, timeout=180)
    wait_until(lambda: len(assigned(zombie)) == 2 and len(assigned(survivor)) == 2, 120, "partitions split 2 + 2")

    def during(collector: accounting.Collector) -> dict[str, object]:
        collector.wait_count(N // 4, timeout=300)
        zombie.proc.send_signal(signal.SIGSTOP)  # mid-batch, as likely as not with a transaction open
        paused = time.monotonic()
        try:
            wait_until(lambda: len(assigned(survivor)) == 4, 180, f"the survivor takes all partitions\n{stack.logs()}")
            took_over_s = time.monotonic() - paused
            at_takeover = collector.count
            collector.wait_count(at_takeover + 500, timeout=300)  # the survivor works the zombie's partitions
        finally:
            zombie.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        # The zombie wakes up with its old assignment; whatever it still sends is fenced.
        collector.wait_count(collector.count + 1_000, timeout=300)
        # Whether the zombie had a batch to commit when it woke (then it was fenced and stopped) or
        # not (then it rejoins the group) depends on where SIGSTOP caught it: both are reported.
        return {"takeover_s": round(took_over_s, 1), "zombie_exit": zombie.proc.poll(),
                "zombie_fenced": "belongs to another worker now" in zombie.log.read_text(errors="replace"),
                "resumed_for_s": round(time.monotonic() - resumed, 1)}

    run_stream(stack, "exactly_once: zombie (SIGSTOP past the session timeout, SIGCONT)", during)
