"""Which model version serves, and how a new one replaces it (hot reload).

A new version is loaded next to the current one (off the event loop), verified (every sha256,
labels against outputs, shapes) and warmed up; only then does `swap` make it current, between
batches. A failure keeps the current version serving and is not retried until the registry
changes (a new version, a pin, a rewritten manifest), so a broken version is not reloaded in a loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker import bundle as bundles
from worker import metrics, registry
from worker.bundle import Bundle

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[tuple[int, int], ...], str | None]


def fingerprint(root: Path) -> Fingerprint:
    """What a reload decision depends on: each version with its manifest's mtime, and the pin."""
    entries = []
    for v in registry.versions(root):
        try:
            entries.append((v, (root / str(v) / registry.MANIFEST).stat().st_mtime_ns))
        except FileNotFoundError:  # vanished between listing and stat
            continue
    try:
        pin = (root / registry.PIN_FILE).read_text().strip()
    except FileNotFoundError:
        pin = None
    return tuple(entries), pin


@dataclass
class Serving:
    """The served bundle plus what operators need to know about its loading history."""

    root: Path
    bundle: Bundle | None = None
    load_seconds: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    _failed_at: Fingerprint | None = None

    @property
    def version(self) -> int | None:
        return self.bundle.version if self.bundle else None

    def poll(self) -> Bundle | None:
        """Load the version the registry asks for, if it is not the one serving. Blocking: call it
        in a thread. Returns the new bundle (not yet serving) or None; raises TextstreamError."""
        state = fingerprint(self.root)
        if state == self._failed_at:
            return None  # same registry as at the last failure: retrying would fail the same way
        try:
            wanted = registry.serving_version(self.root)
            if wanted == self.version:
                return None
            started = time.perf_counter()
            new = bundles.load(self.root / str(wanted))
            self.load_seconds = time.perf_counter() - started
        except Exception:
            self._failed_at = state
            raise
        self._failed_at = None
        return new

    def swap(self, new: Bundle) -> Bundle | None:
        """Make `new` the serving version; returns the old one for the caller to release."""
        old, self.bundle = self.bundle, new
        self.reloads["success"] += 1
        metrics.RELOADS.labels("success").inc()
        metrics.MODEL_VERSION.set(new.version)
        metrics.MODEL_LOADED_AT.set(new.loaded_at)
        metrics.MODEL_LOAD_SECONDS.set(self.load_seconds)
        logger.info("serving model version=%d (was %s) load_seconds=%.2f", new.version,
                    old.version if old else "none", self.load_seconds)
        return old

    def fail(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = time.time()
        self.reloads["failure"] += 1
        metrics.RELOADS.labels("failure").inc()
        logger.error("model reload failed, still serving version %s: %s", self.version, self.last_error)

    def status(self) -> dict[str, Any]:
        b = self.bundle
        return {
            "model_version": b.version if b else None,
            "labels": list(b.labels) if b else [],
            "loaded_at": b.loaded_at if b else None,
            "load_seconds": round(self.load_seconds, 3),
            "reloads": dict(self.reloads),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "registry": str(self.root),
        }
