"""`textstream kafka` and `textstream demo`: development tools from devkit/, which a clone of the
repository has and the image does not (the image runs against a real cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

from worker import logs
from worker.errors import TextstreamError

REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def _devkit(module: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(f"devkit.{module}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("devkit", f"devkit.{module}"):
            raise
        raise TextstreamError("this is a development command: run it from a clone of the repository "
                              "(devkit/ is not installed here)") from None


def cmd_kafka(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    kafka_local = _devkit("kafka_local")
    cfg = kafka_local.config_from_env()
    if args.action == "start":
        kafka_local.assemble(cfg)
        pid = kafka_local.start(cfg, fresh=args.fresh)
        scram = kafka_local.sasl_bootstrap(cfg)
        extra = f" scram_bootstrap={scram} (SASL_PLAINTEXT/SCRAM-SHA-512)" if scram else ""
        print(f"kafka running pid={pid} bootstrap={kafka_local.bootstrap(cfg)}{extra} logs={cfg.logs_dir}")
    elif args.action == "stop":
        print("kafka stopped" if kafka_local.stop(cfg) else "kafka was not running")
    else:
        st = kafka_local.status(cfg)
        print(" ".join(f"{k}={v}" for k, v in st.items()))
        return 0 if st["running"] else 3
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    demo = _devkit("demo")
    return int(demo.run_demo(args.model_dir, REPO_DATA))


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("kafka", help="run the local single-node Kafka broker (development; needs java 17 and mvn)",
                       description="Assemble Apache Kafka from Maven Central jars into deploy/kafka and run it "
                                   "on 127.0.0.1. Variables: TEXTSTREAM_KAFKA_PORT (9092), "
                                   "TEXTSTREAM_KAFKA_CONTROLLER_PORT (9093), TEXTSTREAM_KAFKA_RUN_DIR, "
                                   "TEXTSTREAM_KAFKA_HOME; TEXTSTREAM_KAFKA_SASL_PORT (unset) adds a "
                                   "SASL_PLAINTEXT/SCRAM-SHA-512 listener whose user is TEXTSTREAM_SASL_USERNAME "
                                   "with TEXTSTREAM_SASL_PASSWORD (created at format time: use --fresh).")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--fresh", action="store_true", help="wipe the broker's data before starting")
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("demo", help="start Kafka, train if needed, run a worker, send samples, show results",
                       description="End-to-end demo on this machine (development): starts a fresh local broker, "
                                   "trains on the bundled BBC News + SMS Spam data if the registry is empty, runs "
                                   "a worker, sends news and SMS texts plus malformed records, prints what came "
                                   "out, then stops everything.")
    p.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    p.set_defaults(func=cmd_demo)
