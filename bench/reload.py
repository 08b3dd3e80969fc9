"""Latency during a hot reload versus steady state, under load, in one run.

Starts a local broker and one worker, sends records at a steady rate, publishes a new model version
half-way (announced on the models topic), and compares end-to-end latency (input record timestamp →
output record timestamp) of records sent in steady state with those sent while the new version was
loaded and swapped in. Target: p99 during the swap <= 2 x steady p99.

    .venv/bin/python bench/reload.py [--model-dir models] [--rate 200] [--seconds 40]

Prints a table and writes bench/results/reload.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from harness import REPO, bench_worker, copy_version, pct, produce, texts

from devkit.stack import Broker, Namespace, WorkerProcess
from worker import client, events, registry, topics

TEXTS = texts("bbc_news_test", seed=0)


def republish(reg: Path) -> int:
    """A new version with the same weights: the reload path is exercised in full."""
    current = registry.serving_version(reg)

    def build(folder: Path) -> dict[str, object]:
        manifest = registry.read_manifest(reg / str(current))
        for name in manifest["files"]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(reg / str(current) / name, folder / name)
        return {k: v for k, v in manifest.items() if k not in ("format", "version", "created_at", "files")}

    return registry.publish(reg, build)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="registry to copy (default: train one on BBC News)")
    parser.add_argument("--rate", type=float, default=200.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the stream")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "reload.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="textstream-bench-reload-"))
    reg = work / "registry"
    if args.model_dir:
        copy_version(args.model_dir, reg)
    else:
        subprocess.run([sys.executable, "-m", "commands", "train", "--data",
                        str(REPO / "data" / "bbc_news_train.jsonl.gz"), "--model-dir", str(reg)], check=True, cwd=REPO)

    broker = Broker.start(work / "kafka")
    bootstrap = broker.bootstrap
    ns = Namespace.fresh("bench")
    items = [(f"r{i}", TEXTS[i % len(TEXTS)]) for i in range(int(args.rate * args.seconds))]
    worker: WorkerProcess | None = None
    try:
        asyncio.run(topics.ensure_topics(bootstrap, [ns.raw], 4))
        worker = bench_worker(bootstrap, ns, reg, work / "worker.log")
        worker.wait_ready()
        sent: dict[str, float] = {}
        swap: dict[str, float] = {}

        async def run(worker: WorkerProcess) -> None:
            stream = asyncio.create_task(produce(bootstrap, ns.raw, items, sent, rate=args.rate))
            await asyncio.sleep(args.seconds / 2)
            swap["published"] = time.time()
            v2 = await asyncio.to_thread(republish, reg)
            await events.announce(bootstrap, ns.models, {"event": "published", "version": v2})
            while (await asyncio.to_thread(worker.status))["model_version"] != v2:
                await asyncio.sleep(0.05)
            swap["served"] = time.time()
            await stream

        asyncio.run(run(worker))
        records = asyncio.run(_collect(bootstrap, ns.labeled, len(sent)))
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()

    latency: dict[str, float] = {}
    versions: dict[str, int] = {}
    for rec in records:
        out = orjson.loads(rec.value or b"")
        latency[out["id"]] = rec.timestamp - sent[out["id"]]
        versions[out["id"]] = out["model_version"]
    warmup = min(sent.values()) + 5
    steady = [lat for rid, lat in latency.items() if warmup <= sent[rid] < swap["published"]]
    during = [lat for rid, lat in latency.items() if swap["published"] <= sent[rid] <= swap["served"] + 1.0]
    ratio = pct(during, 99) / pct(steady, 99)
    rows = [
        ("steady state", len(steady), pct(steady, 50), pct(steady, 99), max(steady) * 1000),
        ("during the swap", len(during), pct(during, 50), pct(during, 99), max(during) * 1000),
    ]
    lines = [
        "# Hot reload latency",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Load: {args.rate:.0f} records/s for {args.seconds:.0f} s ({len(sent)} records, BBC News texts), one worker, "
        f"4 partitions, default batch settings. New version published at t={args.seconds / 2:.0f} s; "
        f"published → serving took {swap['served'] - swap['published']:.2f} s.",
        f"Outputs: {len(latency)} of {len(sent)} inputs, versions {sorted(set(versions.values()))}.",
        "",
        "| window | records | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[f"| {name} | {n} | {p50:.1f} | {p99:.1f} | {mx:.1f} |" for name, n, p50, p99, mx in rows],
        "",
        f"p99 during the swap / steady p99 = **{ratio:.2f}** (target <= 2.0).",
        "",
        "Latency = output record timestamp - time the input was handed to the producer; \"during the swap\" = inputs "
        "sent from the publish until 1 s after the worker reported the new version.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    missing = len(sent) - len(latency)
    return 0 if missing == 0 else 1


async def _collect(bootstrap: str, topic: str, expected: int) -> list[client.Record]:
    records: list[client.Record] = []
    async for rec in client.follow(bootstrap, [topic], idle_timeout=15, max_records=expected):
        records.append(rec)
    return records


if __name__ == "__main__":
    sys.exit(main())
