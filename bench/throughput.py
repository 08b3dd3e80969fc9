"""Throughput and latency of the worker against its peers, in one run.

On one machine, with one model and one mix of texts (BBC News articles and Enron emails):

  (a) ceiling   the bundle's compiled call over pre-loaded texts, in batches of TEXTSTREAM_BATCH_SIZE;
                (a0) the same with the LSTM run for every text (TEXTSTREAM_LSTM=always); the share
                of texts the LSTM was needed for, and the labels that differ (must be 0);
  (b) worker    one worker process end to end on a real local broker: N records produced as fast as
                possible, records/s from the first input handed to the producer to the last output,
                and latency from the input handed to the producer to the output appended by the broker
                (output topics use LogAppendTime);
  (b0) always   the same worker with TEXTSTREAM_LSTM=always: every text through both branches, as
                before worker/lstm_skip.py;
  (p) peer      bench/peer.py: the plain aiokafka loop a user would write around the same core;
  (t) exactly-once  the worker with TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once (outputs read with
                read_committed, as its consumers must), and at half of (b)'s rate beside (b) in (d);
                (b), (b0), (p) and (t) run side by side and take turns, --repeats rounds, medians shown;
  (c) naive     the tutorial way: an aiokafka loop calling `model.predict` per message;
  (d) latency   one worker at a steady 700 records/s and at half of (b)'s rate: p50/p95/p99;
  (e) 2 workers two worker processes in one consumer group versus one, each with half the cores'
                TensorFlow threads as the README advises for workers sharing a host; and (e') the
                same with TensorFlow's default threads in each (twice as many threads as cores);
  (x) explain   (a) and (b) again with TEXTSTREAM_EXPLAIN=true: every record explained (worker/explain.py);
  (r) profile   a `py-spy` profile of the worker in a burst of its own (not during (b)).

The worker's own metrics (time in the model per batch, batch sizes, LSTM runs) and CPU per thread
group show where the time goes. Prints a table, writes bench/results/throughput.md and
throughput.json (`worker_records_per_s` is what bench/soak.py loads at 70 %).

    .venv/bin/python bench/throughput.py [--model-dir DIR] [--records 20000] [--repeats 3]
    .venv/bin/python bench/throughput.py --phases abp --records 3000 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import REPO, Collector, bench_worker, pct, produce, texts

from devkit.stack import Broker, Namespace, WorkerProcess, http_get
from worker import bundle as bundle_mod
from worker import config, explain, registry, topics

CORPORA = ("bbc_news_test", "enron_spam_sample")


class Skip(Exception):
    """Raised past the last run --phases asks for."""
CACHE = REPO / "bench" / ".cache" / "throughput-model"
# Output records stamped by the broker when it appends them: latency runs from the input handed to
# the producer to the output stored and acknowledged, not to the output's creation in the worker.
STAMPED = {"TEXTSTREAM_TOPIC_CONFIGS": "message.timestamp.type=LogAppendTime"}


class PeerProcess:
    """bench/peer.py (the plain aiokafka loop) as a process with a worker's environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "peer.py")], cwd=REPO, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log.read_text(errors="replace").split():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench/peer.py did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median records/s (of an odd number; the lower middle of an even one)."""
    return sorted(runs, key=lambda r: r["rate"])[(len(runs) - 1) // 2]


def model_registry(model_dir: Path | None) -> Path:
    """The registry to benchmark: --model-dir, else a model trained once on the same mix (cached)."""
    if model_dir:
        return model_dir
    if not (CACHE / "PUBLISHED").exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        print("training the benchmark model on BBC News + Enron emails (once; cached in bench/.cache)", flush=True)
        subprocess.run([sys.executable, "-m", "commands", "train", "--no-announce", "--model-dir", str(CACHE),
                        "--data", str(REPO / "data" / "bbc_news_train.jsonl.gz"),
                        str(REPO / "data" / "enron_spam_sample.jsonl.gz")], check=True, cwd=REPO)
        (CACHE / "PUBLISHED").touch()
    return CACHE


def ceiling(model: bundle_mod.Bundle, items: list[str], batch_size: int, repeats: int = 3,
            every_text: bool = False) -> tuple[float, float]:
    """(a) docs/s of the compiled call alone, best of `repeats` passes (the machine is shared and
    noisy), and the CPU milliseconds it spent per doc; `every_text`: the LSTM for every text."""
    best = (0.0, 0.0)
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(items), batch_size):
            model.infer(items[i:i + batch_size], every_text=every_text)
        rate = len(items) / (time.perf_counter() - started)
        best = max(best, (rate, (time.process_time() - cpu) / len(items) * 1000))
    return best


def ceiling_explained(model: bundle_mod.Bundle, items: list[str], batch_size: int, tokens: int,
                      repeats: int = 2) -> tuple[float, float]:
    """(a) with an explanation of every text (`tokens` occluded each): docs/s and CPU ms per doc,
    best of `repeats` passes."""
    explain.explain(model, items[:batch_size], tokens)  # builds the explainer (once per version) and traces it
    best = (0.0, 0.0)
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(items), batch_size):
            model.infer(items[i:i + batch_size])
            explain.explain(model, items[i:i + batch_size], tokens)
        rate = len(items) / (time.perf_counter() - started)
        best = max(best, (rate, (time.process_time() - cpu) / len(items) * 1000))
    return best


def explained_worker(bootstrap: str, reg: Path, work: Path, broker_pid: int | None, partitions: int,
                     items: list[tuple[str, str]]) -> dict[str, Any]:
    """(x) one worker with TEXTSTREAM_EXPLAIN=true in its own namespace: a warm-up, then one burst,
    with the CPU each process spent per record."""
    ns = Namespace.fresh("explain")
    asyncio.run(topics.ensure_topics(bootstrap, [ns.raw], partitions))
    worker = bench_worker(bootstrap, ns, reg, work / "explain.log", TEXTSTREAM_EXPLAIN="true")
    try:
        worker.wait_ready()
        wait_balanced([worker], partitions)
        asyncio.run(burst(bootstrap, ns, [(f"warm-{rid}", text) for rid, text in items[:200]]))
        cpu_before = cpu_now(worker.pid, broker_pid)
        result = asyncio.run(burst(bootstrap, ns, items))
        cpu_after = cpu_now(worker.pid, broker_pid)
        result["cpu_ms_per_record"] = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) / len(items) * 1000 for k in cpu_after}
        return result
    finally:
        worker.stop()


async def naive(bootstrap: str, folder: Path, items: list[str], n: int) -> float:
    """(c) what tutorials do: consume, `model.predict` one message, send its output (not awaited), repeat."""
    import keras
    import tensorflow as tf

    classifier = keras.saving.load_model(folder / bundle_mod.CLASSIFIER, compile=False, safe_mode=True)
    encoder = keras.saving.load_model(folder / bundle_mod.ENCODER, compile=False, safe_mode=True)
    centroids = np.load(folder / bundle_mod.CENTROIDS)
    labels = registry.read_manifest(folder)["labels"]
    source, sink = f"naive{os.getpid()}.raw", f"naive{os.getpid()}.labeled"
    await topics.ensure_topics(bootstrap, [source, sink], 1)
    await produce(bootstrap, source, [(f"n{i}", items[i % len(items)]) for i in range(n)], {})
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"naive{os.getpid()}",
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        done, started = 0, 0.0
        async for msg in consumer:
            started = started or time.perf_counter()
            data = orjson.loads(msg.value)
            x = tf.constant([[data["text"]]])
            probs = classifier.predict(x, verbose=0)[0]
            emb = encoder.predict(x, verbose=0)[0]
            cluster = int(np.argmax(centroids @ emb))
            await producer.send(sink, orjson.dumps({"id": data["id"], "label": labels[int(probs.argmax())],
                                                    "confidence": float(probs.max()), "cluster_id": cluster}))
            done += 1
            if done == n:
                await producer.flush()
                return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()
    raise RuntimeError("naive consumer ended early")


def metric_sums(port: int) -> dict[str, float]:
    """The worker's own counters: seconds in the model, records per batch (sums and counts), and
    records the LSTM ran for or not."""
    wanted = ("textstream_inference_seconds_sum", "textstream_inference_seconds_count",
              "textstream_batch_size_sum", "textstream_batch_size_count",
              'textstream_lstm_texts_total{ran="true"}', 'textstream_lstm_texts_total{ran="false"}')
    out = {}
    for line in str(http_get(port, "/metrics")[1]).splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread group of a process: TensorFlow's compute pool, Python
    threads (the event loop, Faust's consumer thread, the inference thread's Python side), the rest."""
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        group = "TensorFlow ops" if name.startswith("tf_") else "Python threads" if name == "python" else "other"
        out[group] += stat_cpu_seconds(stat)
    return dict(out)


def stat_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from a /proc/.../stat line (fields 14 and 15)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(worker: int, broker: int | None) -> dict[str, float]:
    """CPU seconds so far: the worker's thread groups, the broker, and this process (producer and consumer)."""
    out = {f"worker: {k}": v for k, v in cpu_seconds(worker).items()}
    if broker:
        out["Kafka broker"] = stat_cpu_seconds(Path(f"/proc/{broker}/stat").read_text())
    times = os.times()
    out["benchmark (producer, output consumer)"] = times.user + times.system
    return out


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample the worker's Python threads with py-spy while a phase runs (busy samples only)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed: no profile (pip install -e '.[dev]')", flush=True)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def package(frame: str) -> str:
    """'fn (faust/streams.py:12)' -> 'faust'; the project's own modules keep their name."""
    path = frame[frame.rfind("(") + 1:].split(":")[0]
    parts = path.split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for own in ("worker", "training"):
        if own in parts:
            return f"{own}/{parts[-1]}"
    return "python stdlib" if "python3" in path or "<frozen" in path else path


def summarize_profile(raw: Path, top: int = 10) -> list[str]:
    """Where the Python threads spend their busy samples: by package of the running function, and
    the functions (inclusive) of the project and of Faust/aiokafka that take the most."""
    if not raw.exists():
        return ["(no profile)"]
    by_package: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # py-spy writes an occasional warning line into the file
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        by_package[package(frames[-1])] += n
        for frame in set(frames):
            if re.search(r"\((.*/)?(worker|faust|aiokafka)/", frame):
                inclusive[re.sub(r"\((.*/)?(site-packages/)?", "(", frame)] += n
    if not total:
        return ["(no busy samples)"]
    lines = ["| package of the running function | share of busy samples |", "| --- | ---: |"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in by_package.most_common(top)]
    lines += ["", "| function, inclusive (worker, faust, aiokafka) | share |", "| --- | ---: |"]
    lines += [f"| `{name[:100]}` | {n / total:.1%} |" for name, n in inclusive.most_common(top + 5)]
    return lines


async def burst(bootstrap: str, ns: Namespace, items: list[tuple[str, str]], timeout: float = 600) -> dict[str, Any]:
    """Produce `items` as fast as possible; records/s first input -> last output, and latencies."""
    collector = Collector(bootstrap, ns.labeled)
    sent: dict[str, float] = {}
    try:
        await produce(bootstrap, ns.raw, items, sent)
        ids = [rid for rid, _ in items]
        if not await collector.wait_for(ids, timeout):
            missing = sum(1 for i in ids if i not in collector.seen)
            raise SystemExit(f"{missing} of {len(ids)} records had no output within {timeout:.0f} s")
        latencies = [collector.seen[i] - sent[i] for i in ids]
        span = max(collector.seen[i] for i in ids) - min(sent.values())
        return {"records": len(ids), "seconds": span, "rate": len(ids) / span, "p50_ms": pct(latencies, 50),
                "p99_ms": pct(latencies, 99)}
    finally:
        await collector.close()


async def steady(bootstrap: str, ns: Namespace, items: list[tuple[str, str]], rate: float) -> dict[str, Any]:
    """(d) produce at `rate`; latency percentiles after a 3 s warm-up."""
    collector = Collector(bootstrap, ns.labeled)
    sent: dict[str, float] = {}
    try:
        await produce(bootstrap, ns.raw, items, sent, rate=rate)
        ids = [rid for rid, _ in items]
        if not await collector.wait_for(ids, 120):
            raise SystemExit("records missing at 50 % load")
        start = min(sent.values()) + 3
        lat = [collector.seen[i] - sent[i] for i in ids if sent[i] >= start]
        return {"records": len(lat), "rate": rate, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                "p99_ms": pct(lat, 99), "max_ms": max(lat) * 1000}
    finally:
        await collector.close()


def wait_balanced(workers: list[WorkerProcess], partitions: int, timeout: float = 120) -> None:
    """Until every worker is ready and together they own every input partition once."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            states = [w.status() for w in workers]
        except OSError:
            time.sleep(0.5)
            continue
        owned = [p for s in states for p in s.get("assigned") or []]
        if all(s["ready"] and s.get("assigned") for s in states) and len(owned) == len(set(owned)) == partitions:
            return
        time.sleep(0.5)
    raise SystemExit("the workers did not share the partitions in time")


def two_workers(bootstrap: str, ns: Namespace, reg: Path, workers: list[WorkerProcess], partitions: int, log: Path,
                env: dict[str, str], items: list[tuple[str, str]]) -> dict[str, Any]:
    """Bring `workers` up to two (new ones with `env`, logging to `log`), share the partitions, warm up,
    then one burst."""
    while len(workers) < 2:
        workers.append(bench_worker(bootstrap, ns, reg, log, **env))
        workers[-1].wait_ready()
    wait_balanced(workers, partitions)
    asyncio.run(burst(bootstrap, ns, [(f"warm-{rid}", text) for rid, text in items[:1000]]))
    return asyncio.run(burst(bootstrap, ns, items))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="registry to benchmark (default: train one on the same mix)")
    parser.add_argument("--records", type=int, default=20_000, help="records per burst in (b) and (e)")
    parser.add_argument("--naive-records", type=int, default=200, help="records through the naive consumer")
    parser.add_argument("--steady-seconds", type=float, default=30.0, help="length of the 50 %% load phase")
    parser.add_argument("--explain-records", type=int, default=2000, help="records in the burst of (x)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (b), (b0) and (p), one burst each; "
                                                                  "the median is reported")
    parser.add_argument("--phases", default="abcdeptxr",
                        help="which runs, by letter (default: all; b0 runs with b, r is the separate profile "
                             "burst); (b) is needed by (d) and for the ratios")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "throughput.md")
    args = parser.parse_args()

    settings = config.load_settings()
    bs = settings.batch_size
    reg = model_registry(args.model_dir)
    folder = reg / str(registry.serving_version(reg))
    corpus = texts(*CORPORA)
    work = Path(tempfile.mkdtemp(prefix="textstream-bench-throughput-"))
    broker = Broker.start(work / "kafka")
    bootstrap = broker.bootstrap
    results: dict[str, Any] = {"batch_size": bs, "batch_max_wait": settings.batch_max_wait,
                               "records": args.records, "corpora": CORPORA, "model": str(folder)}
    workers: list[WorkerProcess] = []
    runners: dict[str, Any] = {}  # (b), (b0), (p): each (namespace, process)
    rss_at_ready: dict[str, int] = {}
    try:
        bundle_mod.configure_threads(settings)
        model = bundle_mod.load(folder)
        ceiling_items = (corpus * (1 + 8192 // len(corpus)))[:8192]
        results["a_ceiling"], results["a_cpu_ms_per_doc"] = ceiling(model, ceiling_items, bs)
        results["a0_ceiling"], results["a0_cpu_ms_per_doc"] = ceiling(model, ceiling_items, bs, every_text=True)
        full, fast = model.infer(corpus, every_text=True), model.infer(corpus)
        results["a_lstm_share"] = float(fast.lstm_ran.mean())
        results["a_labels_differing"] = int((full.probs.argmax(axis=1) != fast.probs.argmax(axis=1)).sum())
        results["a_texts"] = len(corpus)
        print(f"(a) ceiling: {results['a_ceiling']:.0f} docs/s, {results['a0_ceiling']:.0f} with the LSTM for every "
              f"text; the LSTM ran for {results['a_lstm_share']:.1%} of the {len(corpus)} texts, labels differing "
              f"from both branches on every text: {results['a_labels_differing']}", flush=True)
        if "x" in args.phases:
            results["x_tokens"] = settings.explain_tokens
            results["x_ceiling"], results["x_cpu_ms_per_doc"] = ceiling_explained(
                model, ceiling_items[:2048], bs, settings.explain_tokens)
            results["x0_ceiling"], results["x0_cpu_ms_per_doc"] = ceiling_explained(model, ceiling_items[:2048], bs, 0)
            print(f"(x) ceiling with explanations: {results['x_ceiling']:.0f} docs/s, n-grams only "
                  f"{results['x0_ceiling']:.0f}", flush=True)
        del model
        gc.collect()
        if "c" in args.phases:
            results["c_naive"] = asyncio.run(naive(bootstrap, folder, corpus, args.naive_records))
            print(f"(c) naive: {results['c_naive']:.1f} docs/s", flush=True)

        def batch_of(tag: str, n: int) -> list[tuple[str, str]]:
            return [(f"{tag}{i}", corpus[i % len(corpus)]) for i in range(n)]

        # (b), (b0) and (p) run side by side, each in its own namespace and process, and take turns:
        # one burst each per round, --repeats rounds, the median reported (the machine is noisy).
        for name, make in (("b", lambda ns: bench_worker(bootstrap, ns, reg, work / "worker.log", **STAMPED)),
                           ("b0", lambda ns: bench_worker(bootstrap, ns, reg, work / "worker-always.log",
                                                          TEXTSTREAM_LSTM="always", **STAMPED)),
                           ("p", lambda ns: PeerProcess(ns.env(bootstrap, reg, **STAMPED), work / "peer.log")),
                           ("t", lambda ns: bench_worker(bootstrap, ns, reg, work / "worker-exactly-once.log",
                                                         TEXTSTREAM_PROCESSING_GUARANTEE="exactly_once", **STAMPED))):
            if name in "pt" and name not in args.phases:  # (b0) runs with (b), always
                continue
            ns = Namespace.fresh(f"bench{name}")
            asyncio.run(topics.ensure_topics(bootstrap, [ns.raw], settings.topic_partitions))
            runner = make(ns)
            runner.wait_ready()
            runners[name] = (ns, runner)
            if name != "p":
                workers.append(runner)
                wait_balanced([runner], settings.topic_partitions)
            asyncio.run(burst(bootstrap, ns, batch_of(f"w{name}", 1000)))  # warm-up: connections, first batches
            rss_at_ready[name] = runner.rss_bytes()
        ns, worker = runners["b"]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
        for round_ in range(args.repeats):
            for name, (rns, _) in runners.items():
                if name == "b":
                    before, cpu_before = metric_sums(worker.port), cpu_now(worker.pid, broker.pid)
                rounds[name].append(asyncio.run(burst(bootstrap, rns, batch_of(f"{name}{round_}-", args.records))))
                if name == "b":  # the worker's own counters and CPU over this burst
                    after, cpu_after = metric_sums(worker.port), cpu_now(worker.pid, broker.pid)
                    rounds["b"][-1]["metrics"] = {k: after[k] - before.get(k, 0.0) for k in after}
                    rounds["b"][-1]["cpu_ms_per_record"] = {
                        k: (cpu_after[k] - cpu_before.get(k, 0.0)) / args.records * 1000 for k in cpu_after}
                print(f"({name}) round {round_ + 1}: {rounds[name][-1]['rate']:.0f} records/s", flush=True)
        for name in runners:
            results[f"{name}_rounds"] = rounds[name]
            results[f"{name}_worker" if name == "b" else f"{name}_run"] = median_run(rounds[name])
            results[f"{name}_rss_mib"] = {"at_ready": rss_at_ready[name] / 2**20,
                                          "after_bursts": runners[name][1].rss_bytes() / 2**20}
        b = results["b_worker"]
        counted = b["metrics"]
        results["b_cpu_ms_per_record"] = b["cpu_ms_per_record"]
        results["b_model_share"] = counted["textstream_inference_seconds_sum"] / b["seconds"]
        results["b_mean_batch"] = counted["textstream_batch_size_sum"] / counted["textstream_batch_size_count"]
        ran = counted['textstream_lstm_texts_total{ran="true"}']
        results["b_lstm_share"] = ran / max(ran + counted['textstream_lstm_texts_total{ran="false"}'], 1)
        print(f"(b) worker, median of {args.repeats}: {b['rate']:.0f} records/s; model busy "
              f"{results['b_model_share']:.0%}, mean batch {results['b_mean_batch']:.0f}, LSTM ran for "
              f"{results['b_lstm_share']:.1%} of the records", flush=True)
        for name in [n for n in runners if n not in ("b", "t")]:
            runners[name][1].stop()
        workers[:] = [worker]
        if "r" in args.phases:  # the profile, in a burst of its own: a profiler slows what it samples
            spy = profile(worker.pid, 10, work / "profile.txt")
            asyncio.run(burst(bootstrap, ns, batch_of("r", args.records // 2)))
            if spy:
                spy.wait(timeout=60)

        if "x" in args.phases:
            results["x_worker"] = explained_worker(bootstrap, reg, work, broker.pid, settings.topic_partitions,
                                                   batch_of("x", args.explain_records))
            print(f"(x) worker with explanations: {results['x_worker']['rate']:.0f} records/s", flush=True)
        if "d" not in args.phases:
            raise Skip
        half = b["rate"] / 2
        steady_runs = [("d_700", ns, 700.0), ("d_half_load", ns, half)]
        if "t" in runners:  # exactly-once at the same rate as (b)'s half load, right after it
            steady_runs.append(("t_half_load", runners["t"][0], half))
        for key, run_ns, rate in steady_runs:
            results[key] = asyncio.run(steady(bootstrap, run_ns, batch_of(key, int(rate * args.steady_seconds)), rate))
            d = results[key]
            print(f"({key[0]}) at {rate:.0f}/s: p50 {d['p50_ms']:.0f} p95 {d['p95_ms']:.0f} p99 {d['p99_ms']:.0f} ms",
                  flush=True)
        if "t" in runners:
            runners["t"][1].stop()
        results["d_rss_mib"] = worker.rss_bytes() / 2**20
        if "e" not in args.phases:
            raise Skip

        results["e_default_threads"] = two_workers(bootstrap, ns, reg, workers, settings.topic_partitions,
                                                   work / "default-threads.log", STAMPED, batch_of("x", args.records))
        print(f"(e') two workers, default threads: {results['e_default_threads']['rate']:.0f} records/s", flush=True)
        for w in workers:
            w.stop()
        threads = str(max(1, (os.cpu_count() or 2) // 2))
        split = {"TEXTSTREAM_INTER_OP_THREADS": threads, "TEXTSTREAM_INTRA_OP_THREADS": threads, **STAMPED}
        workers[:] = []
        results["e_threads_per_worker"] = threads
        results["e_two_workers"] = two_workers(bootstrap, ns, reg, workers, settings.topic_partitions,
                                               work / "split-threads.log", split, batch_of("e", args.records))
        print(f"(e) two workers, {threads} TensorFlow threads each: {results['e_two_workers']['rate']:.0f} records/s",
              flush=True)
    except Skip:  # the phases asked for are done
        pass
    finally:
        for w in [*workers, *(runner for _, runner in runners.values())]:
            w.stop()  # a second stop of the same process does nothing
        broker.stop()

    results["worker_records_per_s"] = results["b_worker"]["rate"]
    b_rate = results["b_worker"]["rate"]
    results["ratios"] = {name: b_rate / (results[key] if isinstance(results[key], float) else results[key]["rate"])
                         if name.startswith("b/") else results[key]["rate"] / b_rate
                         for name, key in (("b/a", "a_ceiling"), ("b/p", "p_run"), ("b/b0", "b0_run"), ("t/b", "t_run"),
                                           ("b/c", "c_naive"), ("e2/e1", "e_two_workers"),
                                           ("e2/e1 default threads", "e_default_threads"), ("x/b", "x_worker"))
                         if key in results}
    report = render(results, args, summarize_profile(work / "profile.txt"))
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


def rates(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{run['rate']:.0f}" for run in runs)


def render(r: dict[str, Any], args: argparse.Namespace, profile_lines: list[str]) -> str:
    """The report; runs left out by --phases are left out of it."""
    b, ratios = r["b_worker"], r["ratios"]
    d, e, e_default, x = r.get("d_half_load"), r.get("e_two_workers"), r.get("e_default_threads"), r.get("x_worker")
    d700 = r.get("d_700")
    targets = {"b/a": (">= 0.6", 0.6), "b/p": (">= 1.0", 1.0), "b/b0": (">= 2.0", 2.0), "b/c": (">= 50x", 50.0),
               "e2/e1": (">= 1.3", 1.3), "t/b": (">= 0.85", 0.85)}
    mark = {True: "met", False: "**not met**"}
    rows = [f"| (a) in-process ceiling (compiled call, pre-loaded texts) | {r['a_ceiling']:.0f} | | | |",
            f"| (a0) the same, the LSTM for every text | {r['a0_ceiling']:.0f} | | | |"]
    if x:
        rows += [f"| (x) (a) with an explanation of every text, {r['x_tokens']} tokens occluded "
                 f"(`TEXTSTREAM_EXPLAIN_TOKENS`) | {r['x_ceiling']:.0f} | | | |",
                 f"| (x0) (a) with the n-gram part only (`TEXTSTREAM_EXPLAIN_TOKENS=0`) | {r['x0_ceiling']:.0f} | | | |"]
    rows.append(f"| (b) one worker, end to end, burst, median of {len(r['b_rounds'])}: {rates(r['b_rounds'])} | "
                f"{b['rate']:.0f} | {b['p50_ms']:.0f} | | {b['p99_ms']:.0f} |")
    for key, what in (("b0", "(b0) the same worker, `TEXTSTREAM_LSTM=always`"),
                      ("p", "(p) plain aiokafka loop around the same core (bench/peer.py)"),
                      ("t", "(t) the same worker, `TEXTSTREAM_PROCESSING_GUARANTEE=exactly_once`")):
        if f"{key}_run" in r:
            run = r[f"{key}_run"]
            rows.append(f"| {what}, median of {len(r[key + '_rounds'])}: {rates(r[key + '_rounds'])} | "
                        f"{run['rate']:.0f} | {run['p50_ms']:.0f} | | {run['p99_ms']:.0f} |")
    if x:
        rows.append(f"| (x) one worker with `TEXTSTREAM_EXPLAIN=true`, burst of {x['records']} | {x['rate']:.0f} | "
                    f"{x['p50_ms']:.0f} | | {x['p99_ms']:.0f} |")
    if "c_naive" in r:
        rows.append(f"| (c) naive consumer (`model.predict` per message) | {r['c_naive']:.1f} | | | |")
    t_half = r.get("t_half_load")
    for steady_run, what in ((d700, "(d) one worker at a steady 700/s"), (d, "(d) one worker at 50 % of (b)"),
                             (t_half, "(t) exactly-once at 50 % of (b)")):
        if steady_run:
            rows.append(f"| {what}: {steady_run['rate']:.0f}/s | {steady_run['rate']:.0f} | {steady_run['p50_ms']:.0f} | "
                        f"{steady_run['p95_ms']:.0f} | {steady_run['p99_ms']:.0f} |")
    if e and e_default:
        rows += [f"| (e) two workers, one group, burst, {r['e_threads_per_worker']} TensorFlow threads each "
                 f"(docs/operations.md's advice) | {e['rate']:.0f} | {e['p50_ms']:.0f} | | {e['p99_ms']:.0f} |",
                 f"| (e') the same with TensorFlow's default threads in each worker | {e_default['rate']:.0f} | "
                 f"{e_default['p50_ms']:.0f} | | {e_default['p99_ms']:.0f} |"]
    ratio_rows = []
    for name, label in (("b/a", "worker / ceiling"), ("b/p", "worker / plain aiokafka peer"),
                        ("b/b0", "worker / the same with the LSTM for every text"),
                        ("b/c", "worker / naive"), ("e2/e1", "two workers / one"),
                        ("e2/e1 default threads", "two workers with default threads / one"),
                        ("x/b", "worker with explanations / without"),
                        ("t/b", "exactly-once / at-least-once (records/s)")):
        if name in ratios:
            target, floor = targets.get(name, ("", 0.0))
            shown = f"{ratios[name]:.0f}x" if name == "b/c" else f"{ratios[name]:.2f}"
            ratio_rows.append(f"| {name} {label} | {shown} | {target} | {mark[ratios[name] >= floor] if target else ''} |")
    if d700:
        ratio_rows.append(f"| p99 at 700/s | {d700['p99_ms']:.0f} ms | <= 150 ms | {mark[d700['p99_ms'] <= 150]} |")
    if d:
        ratio_rows.append(f"| p99 at 50 % of (b) | {d['p99_ms']:.0f} ms | <= 100 ms | {mark[d['p99_ms'] <= 100]} |")
    if d and t_half:
        ratio_rows.append(f"| p99 at 50 % of (b), exactly-once / at-least-once | "
                          f"{t_half['p99_ms'] / d['p99_ms']:.2f} | | |")
    cpu_rows = [f"| {k} | {v:.3f} |" for k, v in sorted(r["b_cpu_ms_per_record"].items(), key=lambda kv: -kv[1])]
    cpu_rows.append(f"| total | {sum(r['b_cpu_ms_per_record'].values()):.3f} |")
    explained = []
    if x:
        explained = [
            "",
            f"With explanations, (a) spent {r['x_cpu_ms_per_doc']:.2f} ms of CPU per text, "
            f"{r['x0_cpu_ms_per_doc']:.2f} with the n-gram part only (without: {r['a_cpu_ms_per_doc']:.2f}); "
            "during (x), CPU per record:",
            "",
            "| process / threads | CPU ms per record |",
            "| --- | ---: |",
            *[f"| {k} | {v:.3f} |" for k, v in sorted(x["cpu_ms_per_record"].items(), key=lambda kv: -kv[1])],
            f"| total | {sum(x['cpu_ms_per_record'].values()):.3f} |",
        ]
    return "\n".join([
        "# Throughput and latency",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One run; the broker, the producer and the "
        "consumer of outputs share the same cores as the workers.",
        f"Texts: {' + '.join(r['corpora'])} (bundled), shuffled. Model: `{r['model']}`. "
        f"Batch size {r['batch_size']}, batch wait {r['batch_max_wait'] * 1000:.0f} ms, 4 input partitions, "
        f"{r['records']} records per burst. Runs: {args.phases}.",
        "",
        "| run | records/s | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "| ratio | value | target | |",
        "| --- | ---: | ---: | --- |",
        *ratio_rows,
        "",
        f"During (b) the model was busy {r['b_model_share']:.0%} of the wall time (the worker's "
        f"`textstream_inference_seconds`), mean batch {r['b_mean_batch']:.0f} records; the LSTM ran for "
        f"{r['b_lstm_share']:.1%} of them (`textstream_lstm_texts_total`). In (a) it was needed for "
        f"{r['a_lstm_share']:.1%} of the {r['a_texts']} texts of the mix, and "
        f"{r['a_labels_differing']} labels differed from running both branches on every text. Burst latencies "
        "are queueing time: the burst is produced faster than any worker consumes it.",
        "",
        "Memory (RSS): " + "; ".join(f"{name} {v['at_ready']:.0f} MiB after its warm-up, {v['after_bursts']:.0f} "
                                     f"MiB after the bursts" for name, v in
                                     ((n, r[f"{n}_rss_mib"]) for n in ("b", "b0", "p", "t") if f"{n}_rss_mib" in r))
        + (f"; (b) {r['d_rss_mib']:.0f} MiB after (d)" if "d_rss_mib" in r else "")
        + ". The worker's bound at the defaults is its RSS at ready + 835 MiB "
          "(docs/operations.md#memory).",
        "",
        "## Where the CPU goes",
        "",
        f"(a) spent {r['a_cpu_ms_per_doc']:.2f} ms of CPU per text ({r['a_ceiling'] * r['a_cpu_ms_per_doc'] / 1000:.2f} "
        f"cores busy). During (b), CPU per record ({(os.cpu_count() or 1) * 1000 / b['rate']:.2f} ms of machine "
        "time per record were available):",
        "",
        "| process / threads | CPU ms per record |",
        "| --- | ---: |",
        *cpu_rows,
        *explained,
        "",
        "## Profile of the worker's Python threads (a separate burst, after (b))",
        "",
        "py-spy, 10 s at 100 Hz, busy samples only (TensorFlow's own threads are not Python and not sampled).",
        "",
        *profile_lines,
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
