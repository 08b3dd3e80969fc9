"""Soak: one worker at a steady fraction of its capacity for a long time; memory, lag and losses.

Starts a local broker (fresh data, free ports) and one real worker, sends records at a fixed rate
for --duration seconds (default 600) while sampling the worker's RSS (psutil if installed, else
/proc) and its consumer lag (/status), then waits for the backlog to drain and counts every input
across texts.labeled and texts.dlq by its source (partition, offset). Issue 7's targets: RSS growth
< 10 % (first sample after --warmup vs last sample), lag bounded, 0 lost.

    .venv/bin/python bench/soak.py [--duration 600] [--rate N] [--model-dir models]

--rate defaults to 70 % of `worker_records_per_s` in bench/results/throughput.json (written by the
throughput benchmark); without that file --rate is required. Prints a table and writes
bench/results/soak.md and soak.json. Exit status 0 only if every target was met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from harness import bench_worker, copy_version, texts
from throughput import CORPORA, model_registry

from devkit.stack import Broker, Namespace, WorkerProcess, http_get
from worker import client, topics

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# The texts and the model of bench/throughput.py, whose measured capacity sets the default rate.
TEXTS = texts(*CORPORA)
CAPACITY_SHARE = 0.70
RSS_GROWTH_LIMIT = 0.10
BAD_EVERY = 50  # one malformed record in 50, so the dead-letter path soaks too


def rss_bytes(pid: int) -> int:
    try:
        import psutil  # type: ignore[import-not-found, unused-ignore]

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {pid}") from None


def default_rate() -> float | None:
    path = RESULTS / "throughput.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("worker_records_per_s")
    return float(value) * CAPACITY_SHARE if value else None


def value_of(i: int) -> bytes:
    if i % BAD_EVERY == BAD_EVERY - 1:
        return b'{"id": "s%d", "text": ' % i  # broken JSON: dead-lettered
    return orjson.dumps({"id": f"s{i}", "text": TEXTS[i % len(TEXTS)]})


async def produce(bootstrap: str, topic: str, rate: float, seconds: float, progress: dict[str, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        start = time.monotonic()
        i = 0
        pending: list[asyncio.Future[Any]] = []
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while i < due:
                pending.append(await producer.send(topic, value_of(i), key=f"s{i}".encode()))
                i += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            progress["sent"] = i
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
        progress["sent"] = i
    finally:
        await producer.stop()


def sample(port: int, pid: int, samples: list[dict[str, float]], t0: float, stop: threading.Event,
           every: float) -> None:
    while not stop.wait(every):
        row: dict[str, float] = {"t": round(time.monotonic() - t0, 1), "rss": float(rss_bytes(pid))}
        try:
            status = http_get(port, "/status")[1]
            row["lag"] = float(sum(int(v) for v in dict(status.get("lag") or {}).values()))
            row["ready"] = 1.0 if status.get("ready") else 0.0
        except OSError:
            row["lag"], row["ready"] = float("nan"), 0.0
        samples.append(row)


async def count_outputs(bootstrap: str, labeled: str, dlq: str, expected: set[tuple[int, int]],
                        timeout: float) -> tuple[Counter[tuple[int, int]], Counter[str], int]:
    """Outputs per input (partition, offset) across labeled and dlq, read until every input is
    covered (or `timeout`), then 10 s more for late duplicates; also dead letters by reason."""
    keys: Counter[tuple[int, int]] = Counter()
    reasons: Counter[str] = Counter()
    records = 0
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    agen = client.follow(bootstrap, [labeled, dlq], idle_timeout=15)
    try:
        async for rec in agen:  # an async generator: aclose() below stops its consumer
            records += 1
            if rec.topic == dlq:
                keys[(int(rec.headers["source_partition"]), int(rec.headers["source_offset"]))] += 1
                reasons[rec.headers["error"]] += 1
            else:
                src = orjson.loads(rec.value or b"")["source"]
                keys[(int(src["partition"]), int(src["offset"]))] += 1
            now = time.monotonic()
            if settle_until is None and (len(keys) >= len(expected) and expected <= keys.keys()):
                settle_until = now + 10
            if now > deadline or (settle_until is not None and now > settle_until):
                break
    finally:
        await agen.aclose()  # type: ignore[attr-defined]
    return keys, reasons, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of steady load (default 600)")
    parser.add_argument("--rate", type=float, help="records per second (default: 70%% of bench/results/"
                        "throughput.json's worker_records_per_s)")
    parser.add_argument("--model-dir", type=Path, help="registry to copy (default: bench/throughput.py's model)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline sample")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/lag samples")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the backlog at the end")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.md")
    args = parser.parse_args()
    rate = args.rate or default_rate()
    if not rate:
        parser.error("no bench/results/throughput.json: give --rate (records/s)")
    rate_source = "--rate" if args.rate else f"{CAPACITY_SHARE:.0%} of bench/results/throughput.json"

    work = Path(tempfile.mkdtemp(prefix="textstream-soak-"))
    reg = work / "registry"
    copy_version(args.model_dir or model_registry(None), reg)

    broker = Broker.start(work / "kafka")
    bootstrap = broker.bootstrap
    ns = Namespace.fresh("soak")
    raw, labeled, dlq = ns.raw, ns.labeled, ns.dlq
    samples: list[dict[str, float]] = []
    progress = {"sent": 0}
    stop = threading.Event()
    worker: WorkerProcess | None = None
    try:
        asyncio.run(topics.ensure_topics(bootstrap, [raw, labeled, dlq], 4))
        worker = bench_worker(bootstrap, ns, reg, work / "worker.log")
        worker.wait_ready()

        print(f"soak: {rate:.0f} records/s ({rate_source}) for {args.duration:.0f} s; worker pid {worker.pid}, "
              f"log {work / 'worker.log'}", flush=True)
        t0 = time.monotonic()
        sampler = threading.Thread(target=sample, args=(worker.port, worker.pid, samples, t0, stop, args.sample_every),
                                   daemon=True)
        sampler.start()
        asyncio.run(produce(bootstrap, raw, rate, args.duration, progress))
        produced_s = time.monotonic() - t0
        drain_started = time.monotonic()
        expected = {(p, o) for p, o in _input_keys(bootstrap, raw)}
        keys, reasons, outputs = asyncio.run(count_outputs(bootstrap, labeled, dlq, expected, args.drain_timeout))
        drained_s = time.monotonic() - drain_started
        stop.set()
        sampler.join(timeout=10)
        alive = worker.proc.poll() is None
    finally:
        stop.set()
        if worker is not None:
            worker.stop()
        broker.stop()

    steady = [s for s in samples if s["t"] >= args.warmup] or samples
    rss_start, rss_end = steady[0]["rss"], steady[-1]["rss"]
    rss_max = max(s["rss"] for s in samples)
    growth = rss_end / rss_start - 1
    lags = [s["lag"] for s in steady if s["lag"] == s["lag"]]  # drop NaN (status unreachable)
    lag_max = max(lags) if lags else float("nan")
    lag_p99 = float(np.percentile(lags, 99)) if lags else float("nan")
    lag_bound = rate * 10  # "bounded": never more than 10 s of input behind
    lost = len(expected - keys.keys())
    duplicates = sum(c - 1 for k, c in keys.items() if k in expected)
    sent = progress["sent"]
    checks = {
        f"RSS growth < {RSS_GROWTH_LIMIT:.0%}": growth < RSS_GROWTH_LIMIT,
        f"lag bounded (max <= {lag_bound:.0f} = 10 s of input)": lag_max <= lag_bound,
        "0 lost": lost == 0,
        "worker alive at the end": alive,
    }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "duration_s": args.duration, "rate_target": rate, "rate_source": rate_source, "sent": sent,
        "throughput_achieved": round(sent / produced_s, 1), "outputs": outputs,
        "labeled": outputs - sum(reasons.values()), "dead_lettered": dict(reasons),
        "lost": lost, "duplicates": duplicates, "drain_s": round(drained_s, 1),
        "rss_start_mb": round(rss_start / 2**20, 1), "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_max_mb": round(rss_max / 2**20, 1), "rss_growth_pct": round(growth * 100, 2),
        "lag_max": lag_max, "lag_p99": round(lag_p99, 1), "samples": samples,
        "checks": checks, "passed": all(checks.values()),
    }
    lines = [
        "# Soak",
        "",
        f"Machine: {result['machine']}; {result['date']}. One worker, 4 partitions, default batch settings, "
        f"a local single-node broker. Load: {rate:.0f} records/s ({rate_source}) for {args.duration:.0f} s, "
        f"BBC News articles and Enron emails (as bench/throughput.py), one malformed record in {BAD_EVERY}. RSS baseline: first sample after "
        f"{args.warmup:.0f} s; lag = end offset - committed offset summed over the input partitions, "
        f"sampled every {args.sample_every:.0f} s from /status.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| records sent | {sent} |",
        f"| throughput achieved | {result['throughput_achieved']} records/s |",
        f"| labelled / dead-lettered | {result['labeled']} / {sum(reasons.values())} |",
        f"| **lost** | **{lost}** |",
        f"| duplicates | {duplicates} |",
        f"| RSS start / end / max | {result['rss_start_mb']} / {result['rss_end_mb']} / {result['rss_max_mb']} MB |",
        f"| **RSS growth** | **{growth:+.1%}** |",
        f"| lag max / p99 | {lag_max:.0f} / {lag_p99:.0f} records |",
        f"| backlog drained after the load stopped | {drained_s:.1f} s (includes 10 s watching for duplicates) |",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
        "",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["passed"] else 1


def _input_keys(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    async def run() -> set[tuple[int, int]]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        finally:
            await consumer.stop()
        return {(tp.partition, o) for tp, end in ends.items() for o in range(end)}

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
