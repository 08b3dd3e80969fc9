"""Fault 2: the broker is stopped mid-stream (SIGTERM: controlled shutdown; SIGKILL: a crash) and
restarted on the same data and ports. The worker must reconnect by itself: same process, no crash
loop, nothing lost; in exactly-once mode, nothing duplicated either for a read_committed consumer
(the transaction open when the broker died is aborted; a read_uncommitted view is reported beside).
Each case runs on a broker of its own (the session broker stays untouched).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time

import pytest

from devkit import kafka_local
from tests.faults import accounting
from tests.integration.conftest import Stack, wait_until
from tests.integration.test_end_to_end import valid_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

N = 12_000
RATE = 400.0  # records/s: the stream (30 s) is still flowing when the broker comes back
KILL_AFTER = 2_000  # outputs seen before the broker is stopped
DOWN_S = 10.0  # how long the broker stays down


@pytest.mark.parametrize(("sig", "guarantee"), [(signal.SIGTERM, "at_least_once"), (signal.SIGKILL, "at_least_once"),
                                               (signal.SIGKILL, "exactly_once")],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-exactly_once"])
def test_broker_stopped_mid_stream_and_restarted(own_broker: kafka_local.BrokerConfig, own_stack: Stack,
                                                 sig: int, guarantee: str, caplog: pytest.LogCaptureFixture) -> None:
    # The test's own clients log every failed reconnect while the broker is down (~50,000 lines).
    caplog.set_level(logging.CRITICAL, logger="aiokafka")
    stack = own_stack
    started = time.monotonic()
    exactly_once = guarantee == "exactly_once"
    worker = stack.start_worker(TEXTSTREAM_PROCESSING_GUARANTEE=guarantee)
    stack.wait_ready(worker, timeout=180)
    # The producer is a client like any other: it rides out the outage (acks=all, retried until acked).
    producer = accounting.Producer(stack.bootstrap, stack.raw, valid_records(N), RATE)
    before = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq)
    try:
        before.wait_count(KILL_AFTER, timeout=180)
    finally:
        before.stop()
    assert producer.sent < N, "the stream ended before the outage: slow the producer down"
    assert kafka_local.kill(own_broker, sig, timeout=60)
    stopped = time.monotonic()
    alive_while_down = True
    while time.monotonic() - stopped < DOWN_S:
        alive_while_down &= worker.proc.poll() is None
        time.sleep(0.2)
    kafka_local.start(own_broker)  # same data directory, same ports
    back_wall, back = time.time(), time.monotonic()

    collector = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq,
                                     isolation_level="read_committed" if exactly_once else "read_uncommitted")
    uncommitted = accounting.Collector(stack.bootstrap, stack.labeled, stack.dlq) if exactly_once else None
    try:
        wait_until(lambda: worker.get("/readyz")[0] == 200, 180, "worker ready again")
        ready_s = time.monotonic() - back
        wait_until(lambda: collector.first_produced_after(back_wall) is not None, 180,
                   "an output produced after the broker came back")
        first_output_s = (collector.first_produced_after(back_wall) or back_wall) - back_wall
        producer.join(timeout=300)
        expected = accounting.input_keys(stack.bootstrap, stack.raw)
        assert len(expected) == N, f"the input topic holds {len(expected)} records, {N} were sent"
        collector.wait_covered(expected, timeout=240)
    finally:
        collector.stop()
        if uncommitted is not None:
            uncommitted.stop()
    logs = "".join(p.read_text(errors="replace") for p in sorted(stack.log_dir.glob("worker-*.log")))
    name, ids = f"broker {signal.Signals(sig).name} + restart, {guarantee}", {f"ok-{i}" for i in range(N)}
    result = accounting.tally(
        name, collector.records, expected, stack.dlq, ids=ids, isolation_level=collector.isolation_level,
        down_s=DOWN_S, ready_after_restart_s=round(ready_s, 1),
        first_output_after_restart_s=round(first_output_s, 1), wall_s=round(time.monotonic() - started, 1),
        worker_processes=len(stack.workers), outputs_before_stop=before.count, worker_log_lines=logs.count("\n"),
    )
    assert alive_while_down and worker.proc.poll() is None, f"the worker exited\n{logs}"
    assert len(stack.workers) == 1  # the same process served before and after: no restart, no crash loop
    assert result.lost == 0 and result.ids_lost == 0, f"{result.line()}\n{logs}"
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()
    if uncommitted is not None:
        accounting.tally(name, uncommitted.records, expected, stack.dlq, ids=ids,
                         isolation_level=uncommitted.isolation_level)  # reported: aborted outputs count there
        assert result.duplicates == 0 and result.id_duplicates == 0, f"{result.line()}\n{logs}"
    # aiokafka's reconnect errors are rate-limited (worker/logs.py): they were ~63,000 lines in 10 s.
    assert logs.count("Unable connect to node") < 100, result.line()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_stop_while_the_broker_is_down_ends_within_the_stop_timeout(
        own_broker: kafka_local.BrokerConfig, own_stack: Stack, guarantee: str) -> None:
    # With the broker gone, aiokafka retries forever and Faust's clean stop never ended: the worker
    # ignored SIGTERM until it was SIGKILLed (found 2026-12-01). TEXTSTREAM_STOP_TIMEOUT bounds it.
    stop_timeout = 5.0
    worker = own_stack.start_worker(TEXTSTREAM_PROCESSING_GUARANTEE=guarantee,
                                    TEXTSTREAM_STOP_TIMEOUT=str(stop_timeout))
    own_stack.wait_ready(worker, timeout=180)
    assert kafka_local.kill(own_broker, signal.SIGKILL, timeout=60)
    # Until the worker knows the broker is gone (its readiness check fails), so the stop meets it.
    wait_until(lambda: worker.get("/readyz")[0] != 200, 120, "the worker noticing the broker is down")
    asked = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(timeout=stop_timeout + 60)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        raise AssertionError(f"the worker ignored SIGTERM for {stop_timeout + 60:.0f} s\n{worker.log_tail()}") from None
    took = time.monotonic() - asked
    log = worker.log_tail(20_000)
    abandoned = "did not stop cleanly within 5 s" in log
    # Either the clean stop finished (0) or the deadline ended it (1, said in the log); never longer.
    assert (code, abandoned) in {(0, False), (1, True)}, f"exit code {code}\n{log}"
    assert took < stop_timeout + 15, f"the stop took {took:.1f} s\n{log}"
