"""The worker on a three-node cluster (replication factor 3, min.insync.replicas 2, no auto-creation,
ACLs) as `User:worker`: end to end on pre-created topics, a rolling restart of every broker while
20,000 records stream, one broker down for a minute. Inputs are counted by (partition, offset)
over the output and dead-letter topics (tests/faults/accounting.py); the figures are printed as
FAULT-RESULT lines for docs/reliability.md. The tests run in file order on one worker."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from collections.abc import Sequence

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAuthorizationFailedError

from devkit import cluster as kcluster
from devkit.stack import WorkerProcess, list_topics, read_until
from tests.cluster.conftest import PRINCIPAL, USER, WORKER_SECURITY, ClusterStack, labels_of, records
from tests.faults import accounting
from worker import client

pytestmark = [pytest.mark.cluster]

ROLLING_N = 20_000
ROLLING_RATE = 150.0  # records/s: 133 s of stream; three restarts took 73 s on 2 cores (14-31 s each)
OUTAGE_S = 60.0  # the "one broker down for a minute": wall time is the condition here
OUTAGE_RATE = 100.0
OUTAGE_N = 10_000  # 100 s of stream: flowing before, during and after the outage


def create_as_worker(bootstrap: str, name: str) -> list[tuple[str, int]]:
    """CreateTopics as User:worker: (topic, error code) per topic of the response."""
    async def run() -> list[tuple[str, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **WORKER_SECURITY.kwargs())
        await admin.start()
        try:
            response = await admin.create_topics([NewTopic(name, 1, 3)])
            return [(err[0], err[1]) for err in response.topic_errors]
        finally:
            await admin.close()

    return asyncio.run(run())


def offsets_now(stack: ClusterStack) -> dict[int, int]:
    return accounting.end_offsets(stack.bootstrap, stack.namespace.raw)


def keys_since(stack: ClusterStack, start: dict[int, int]) -> set[accounting.Key]:
    ends = offsets_now(stack)
    return {(p, o) for p, end in ends.items() for o in range(start.get(p, 0), end)}


def mine(collector: accounting.Collector, start: dict[int, int], dlq: str) -> list[client.Record]:
    """The outputs of this test's inputs (the worker is shared with the tests before it)."""
    out = []
    for rec in list(collector.records):
        p, o = accounting.source_of(rec, dlq)
        if o >= start.get(p, 0):
            out.append(rec)
    return out


def longest_gap(stamps: Sequence[float], since: float, until: float) -> float:
    """The longest time between consecutive outputs (Kafka timestamps: when the worker produced them)
    over the window [since, until], counting from the last output before it to the first after it."""
    ts = sorted(stamps)
    gaps = [b - a for a, b in itertools.pairwise(ts) if b >= since and a <= until]
    return max(gaps, default=until - since)


def gaps_by_restart(stamps: Sequence[float], stops: Sequence[float]) -> list[float]:
    """The longest gap between consecutive outputs owed to each restart: a gap belongs to the
    restart during whose stretch it ended, from that node's stop to the next node's stop (the
    last: to the end of the stream). A gap that opens just before the next stop (the SIGKILL's)
    is that next restart's, not the one before (the restarts follow each other at once)."""
    ts = sorted(stamps)
    bounds = [*stops, float("inf")]
    out = []
    for since, until in itertools.pairwise(bounds):
        gaps = [b - a for a, b in itertools.pairwise(ts) if since < b <= until]
        out.append(max(gaps, default=(until if until != float("inf") else max(ts, default=since)) - since))
    return out


def worker_log(stack: ClusterStack) -> str:
    return stack.worker.log.read_text(errors="replace")


def test_worker_labels_end_to_end_as_worker_principal(cluster_stack: ClusterStack) -> None:
    stack, ns = cluster_stack, cluster_stack.namespace
    before = list_topics(stack.bootstrap)
    assert set(stack.topics) <= before
    n = 200
    asyncio.run(client.send_values(stack.bootstrap, ns.raw, records("e2e", n)))
    labels = labels_of(stack.model_dir)
    out = asyncio.run(read_until(stack.bootstrap, [ns.labeled], n, timeout=180, settle=2.0,
                                 alive=lambda: stack.worker.alive))
    bodies = [orjson.loads(r.value or b"") for r in out]
    assert sorted(b["id"] for b in bodies) == sorted(f"e2e-{i}" for i in range(n)), worker_log(stack)[-3000:]
    assert {b["label"] for b in bodies} <= set(labels)
    log = worker_log(stack)
    assert f"security=SASL_PLAINTEXT/SCRAM-SHA-512 as {USER}" in log
    assert "created_topics=none" in log

    # The worker's principal may not create topics: the broker refuses, per topic, in the response.
    forbidden = f"{ns.name}.forbidden"
    assert create_as_worker(stack.cluster.sasl_bootstrap, forbidden) == [(forbidden,
                                                                          TopicAuthorizationFailedError.errno)]
    after = list_topics(stack.bootstrap)
    assert forbidden not in after
    assert after == before, f"topics appeared: {sorted(after - before)}"
    assert stack.worker.alive


def test_rolling_restart_while_20000_records_stream(cluster_stack: ClusterStack,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="aiokafka")  # the test's clients reconnect loudly
    stack, ns, cluster = cluster_stack, cluster_stack.namespace, cluster_stack.cluster
    started = time.monotonic()
    start = offsets_now(stack)
    collector = accounting.Collector(stack.bootstrap, ns.labeled, ns.dlq)
    try:
        baseline = collector.count
        producer = accounting.Producer(stack.bootstrap, ns.raw, records("roll", ROLLING_N), ROLLING_RATE)
        collector.wait_count(baseline + 1_000, timeout=180)
        restarts: list[dict[str, object]] = []
        stops: list[float] = []  # wall clock of each node's stop
        slowest = 0.0
        for i, sig in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM)):
            stopped_wall = time.time()
            stops.append(stopped_wall)
            kcluster.stop_node(cluster, i, sig)
            down_s = time.time() - stopped_wall
            kcluster.start_node(cluster, i)
            up_s = time.time() - stopped_wall
            isr_s = kcluster.wait_isr_full(cluster, timeout=180)
            slowest = max(slowest, up_s + isr_s)
            assert stack.worker.alive, f"the worker exited during the restart of node {i}\n{worker_log(stack)[-4000:]}"
            restarts.append({"node": i + 1, "signal": signal.Signals(sig).name, "stopped_in_s": round(down_s, 1),
                             "listening_after_s": round(up_s, 1), "isr_full_after_s": round(up_s + isr_s, 1),
                             "rate": producer.rate})
            if i < 2:  # the remaining restarts, each up to 1.5x the slowest so far, + 10 s
                producer.last_at_least(1.5 * slowest * (2 - i) + 10)
        streaming = producer.sent < ROLLING_N
        producer.join(timeout=300)
        expected = keys_since(stack, start)
        assert len(expected) == ROLLING_N, f"the input topic got {len(expected)} records, {ROLLING_N} were sent"
        collector.wait_covered(expected, timeout=300)
    finally:
        collector.stop()
    outputs = mine(collector, start, ns.dlq)
    stamps = [r.timestamp for r in outputs]
    gaps = gaps_by_restart(stamps, stops)
    for r, gap in zip(restarts, gaps, strict=True):
        r["longest_output_gap_s"] = round(gap, 2)
    result = accounting.tally("cluster rolling restart", outputs, expected, ns.dlq,
                              ids={f"roll-{i}" for i in range(ROLLING_N)}, rate=ROLLING_RATE, restarts=restarts,
                              worker_alive=stack.worker.alive, wall_s=round(time.monotonic() - started, 1))
    assert streaming, f"the stream ended before the last restart: slow the producer down ({result.line()})"
    assert stack.worker.alive, worker_log(stack)[-4000:]
    assert result.lost == 0 and result.ids_lost == 0, result.line()
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()


def test_one_broker_down_for_a_minute_worker_keeps_labelling(cluster_stack: ClusterStack,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="aiokafka")
    stack, ns, cluster = cluster_stack, cluster_stack.namespace, cluster_stack.cluster
    started = time.monotonic()
    start = offsets_now(stack)
    node = 2
    collector = accounting.Collector(stack.bootstrap, ns.labeled, ns.dlq)
    try:
        baseline = collector.count
        producer = accounting.Producer(stack.bootstrap, ns.raw, records("down", OUTAGE_N), OUTAGE_RATE)
        collector.wait_count(baseline + 500, timeout=180)
        kcluster.stop_node(cluster, node, signal.SIGTERM)
        down_wall, down = time.time(), time.monotonic()
        while time.monotonic() - down < OUTAGE_S:
            assert stack.worker.alive, f"the worker exited with a broker down\n{worker_log(stack)[-4000:]}"
            time.sleep(0.5)
        up_wall = time.time()
        sent_during = producer.sent
        kcluster.start_node(cluster, node)
        isr_s = kcluster.wait_isr_full(cluster, timeout=180)
        producer.join(timeout=300)
        expected = keys_since(stack, start)
        assert len(expected) == OUTAGE_N
        collector.wait_covered(expected, timeout=300)
    finally:
        collector.stop()
    outputs = mine(collector, start, ns.dlq)
    stamps = [r.timestamp for r in outputs]
    during = [t for t in stamps if down_wall <= t <= up_wall]
    # Outputs in every 10 s of the minute: the worker kept labelling with two brokers of three.
    slices = [sum(1 for t in during if down_wall + k * 10 <= t < down_wall + (k + 1) * 10) for k in range(6)]
    result = accounting.tally("cluster one broker down 60 s", outputs, expected, ns.dlq,
                              ids={f"down-{i}" for i in range(OUTAGE_N)}, rate=OUTAGE_RATE, down_s=OUTAGE_S,
                              node=node + 1, outputs_during_outage=len(during), outputs_per_10s=slices,
                              longest_output_gap_during_outage_s=round(longest_gap(stamps, down_wall, up_wall), 2),
                              isr_full_after_restart_s=round(isr_s, 1), worker_alive=stack.worker.alive,
                              wall_s=round(time.monotonic() - started, 1))
    assert sent_during < OUTAGE_N, f"the stream ended during the outage: slow the producer down ({result.line()})"
    assert all(slices), f"a 10 s stretch of the outage without outputs: {slices}\n{result.line()}"
    assert stack.worker.alive, worker_log(stack)[-4000:]
    assert result.lost == 0 and result.ids_lost == 0, result.line()
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()


def test_a_gap_belongs_to_the_restart_during_which_it_ended() -> None:
    # Stops at 5, 10.2 and 20: the gap 2 -> 10 is the first restart's, the gap 11 -> 30 the last's
    # (it opened before the third stop and ended after it); the second saw only 0.5 s gaps.
    assert gaps_by_restart([0, 1, 2, 10, 10.5, 11, 30, 31], [5, 10.2, 20]) == [8, 0.5, 19]
    # No output at all between two stops: the whole stretch is the gap.
    assert gaps_by_restart([0, 30], [5, 10, 20]) == [5, 10, 30]


EXACTLY_ONCE_N = 6_000
EXACTLY_ONCE_RATE = 100.0  # records/s: 60 s of stream, through a broker SIGKILL and a worker kill -9


def test_exactly_once_as_worker_principal_through_a_broker_kill_and_a_worker_kill(
        cluster_stack: ClusterStack, caplog: pytest.LogCaptureFixture) -> None:
    """The module's worker is replaced by one with TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once: first
    refused for want of rights on its transactional ids, then with them (docs/operations.md); the
    transaction state and the topics are replicated 3 ways. A read_committed consumer sees every
    input once."""
    caplog.set_level(logging.CRITICAL, logger="aiokafka")
    stack, ns, cluster = cluster_stack, cluster_stack.namespace, cluster_stack.cluster
    started = time.monotonic()
    assert stack.worker.stop() == 0, worker_log(stack)[-4000:]
    env = {**stack.env(), "TEXTSTREAM_PROCESSING_GUARANTEE": "exactly_once"}
    # Without rights on its transactional ids, the worker stops at its first assignment, naming them.
    refused = WorkerProcess(env, stack.log_dir / "worker-exactly-once-no-acl.log")
    try:
        refused.proc.wait(timeout=300)
    finally:
        refused.stop()
    refusal = refused.log.read_text(errors="replace")
    assert refused.proc.returncode != 0, refusal[-4000:]
    assert f"Write and Describe on the transactional ids '{ns.name}-'" in refusal, refusal[-4000:]
    asyncio.run(kcluster.create_acls(cluster, kcluster.exactly_once_acls(PRINCIPAL, ns.name)))

    started_here: list[WorkerProcess] = []

    def start_worker(i: int) -> WorkerProcess:
        stack.worker = WorkerProcess(env, stack.log_dir / f"worker-exactly-once-{i}.log")
        started_here.append(stack.worker)
        stack.worker.wait_ready(timeout=300)
        return stack.worker

    committed = accounting.Collector(stack.bootstrap, ns.labeled, ns.dlq, isolation_level="read_committed")
    uncommitted = accounting.Collector(stack.bootstrap, ns.labeled, ns.dlq)
    try:
        start_worker(0)
        start = offsets_now(stack)
        baseline = committed.count
        producer = accounting.Producer(stack.bootstrap, ns.raw, records("eos", EXACTLY_ONCE_N), EXACTLY_ONCE_RATE)
        committed.wait_count(baseline + 1_000, timeout=180)
        kcluster.stop_node(cluster, 0, signal.SIGKILL)
        kcluster.start_node(cluster, 0)
        isr_s = kcluster.wait_isr_full(cluster, timeout=180)
        assert stack.worker.alive, f"the worker exited when a broker was killed\n{worker_log(stack)[-4000:]}"
        producer.last_at_least(60)  # through the worker kill and its successor's start, however slow
        committed.wait_count(committed.count + 500, timeout=180)
        streaming = producer.sent < EXACTLY_ONCE_N
        stack.worker.proc.kill()
        stack.worker.proc.wait(timeout=30)
        start_worker(1)
        producer.join(timeout=300)
        expected = keys_since(stack, start)
        assert len(expected) == EXACTLY_ONCE_N
        committed.wait_covered(expected, timeout=300)
    finally:
        committed.stop()
        uncommitted.stop()
        for w in started_here:  # the module fixture stops only the worker it started
            w.stop()
    ids = {f"eos-{i}" for i in range(EXACTLY_ONCE_N)}
    name = "cluster exactly_once: broker SIGKILL, then worker kill -9"
    result = accounting.tally(name, mine(committed, start, ns.dlq), expected, ns.dlq, ids=ids,
                              isolation_level="read_committed", isr_full_after_restart_s=round(isr_s, 1),
                              wall_s=round(time.monotonic() - started, 1))
    accounting.tally(name, mine(uncommitted, start, ns.dlq), expected, ns.dlq, ids=ids,
                     isolation_level="read_uncommitted")
    assert streaming, f"the stream ended before the worker kill: slow the producer down ({result.line()})"
    assert result.lost == 0 and result.ids_lost == 0, f"{result.line()}\n{worker_log(stack)[-4000:]}"
    assert result.duplicates == 0 and result.id_duplicates == 0, result.line()
    assert result.unexpected == 0 and result.dead_lettered == 0, result.line()
