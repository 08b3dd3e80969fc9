"""A real Prometheus server scrapes a running worker: what it counts is what went through."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.stack import free_ports
from tests.integration.conftest import Stack, wait_until

pytestmark = pytest.mark.integration


def start_prometheus(tmp: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_ports(1)[0]
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: textstream-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    return proc, port


def query(port: int, promql: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    yield started
    for proc, _ in started:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_counts_what_the_worker_labelled(stack: Stack, tmp_path: Path,
                                                    prometheus_for: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    n, bad = 300, 7
    worker = stack.start_worker()
    prometheus_for.append(start_prometheus(tmp_path, worker.port))
    _, prom_port = prometheus_for[0]

    # The HTTP port opens before the model is loaded and the group joined: not ready, and it says why.
    first: tuple[int, dict[str, object]] | None = None
    deadline = time.monotonic() + 90
    while first is None and time.monotonic() < deadline:
        try:
            first = worker.get("/readyz")
        except OSError:
            time.sleep(0.05)
    assert first is not None and first[0] == 503, first
    assert first[1]["ready"] is False and not all(first[1]["checks"].values())  # type: ignore[union-attr]
    stack.wait_ready(worker)
    code, health = worker.get("/healthz")
    assert code == 200 and health["alive"] is True

    stack.send([b'{"id": "p%d", "text": "Shares fell as the bank raised rates."}' % i for i in range(n)]
               + [b"\xff"] * bad)
    assert len(stack.read([stack.labeled], n)) == n

    def scraped(promql: str, expected: float) -> bool:
        return query(prom_port, promql) == expected

    wait_until(lambda: scraped('sum(textstream_messages_total{outcome="labeled"})', n), 60, "labeled == N in Prometheus")
    wait_until(lambda: scraped('sum(textstream_messages_total{reason="invalid_utf8"})', bad), 30, "dead letters")
    wait_until(lambda: scraped(f'sum(textstream_consumer_lag{{topic="{stack.raw}"}})', 0), 60, "lag back to 0")
    assert query(prom_port, "textstream_model_version") == 1
    assert query(prom_port, "sum(textstream_predictions_total)") == n
    assert query(prom_port, "textstream_confidence_count") == n
    assert query(prom_port, 'up{job="textstream-worker"}') == 1
