"""Test-only: makes a worker's model load wait for a gate file, like a cold disk importing
TensorFlow for minutes. Put this folder on the worker's PYTHONPATH and set TEXTSTREAM_TEST_LOAD_GATE
to the gate's path; the load proceeds once the file exists (or after 600 s). A second gate holds a
load in the middle of hashing a version's files (below)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_gate = os.environ.get("TEXTSTREAM_TEST_LOAD_GATE")
if _gate:
    from worker import bundle

    _prepare = bundle.prepare_runtime

    def _held_prepare(settings):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 600
        while not Path(_gate).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return _prepare(settings)

    bundle.prepare_runtime = _held_prepare

# TEXTSTREAM_TEST_HASH_GATE=<folder>: when the worker hashes the files of version
# TEXTSTREAM_TEST_HASH_GATE_VERSION (registry.verify, the first step of a load), it writes
# <folder>/holding and waits for <folder>/go before it reads the file: a test can change the
# registry at exactly that point of a load (a prune removing the version's folder).
_hash_gate = os.environ.get("TEXTSTREAM_TEST_HASH_GATE")
if _hash_gate:
    from worker import registry

    _sha256_file = registry.sha256_file
    _held_version = os.environ.get("TEXTSTREAM_TEST_HASH_GATE_VERSION", "")

    def _held_sha256_file(path):  # type: ignore[no-untyped-def]
        gate = Path(_hash_gate)
        if Path(path).parent.name == _held_version and not (gate / "go").exists():
            (gate / "holding").write_text(str(path))
            deadline = time.monotonic() + 600
            while not (gate / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return _sha256_file(path)

    registry.sha256_file = _held_sha256_file
