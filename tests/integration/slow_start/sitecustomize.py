"""Test-only: makes a worker's model load wait for a gate file, like a cold disk importing
TensorFlow for minutes. Put this folder on the worker's PYTHONPATH and set TEXTSTREAM_TEST_LOAD_GATE
to the gate's path; the load proceeds once the file exists (or after 600 s)."""

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
