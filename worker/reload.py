"""Hot reload: which model version serves (Serving), and how a new one replaces it (Reloader).

A new version is loaded next to the current one (off the event loop), verified (every sha256,
labels against outputs, shapes) and warmed up; only then does `swap` make it current, between
batches. A failure keeps the current version serving and is not retried until the registry
changes (a new version, a pin, a rewritten manifest), so a broken version is not reloaded in a loop.
Reloads come from the registry polls and the `texts.models` events (`follow_model_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from worker import bundle as bundles
from worker import metrics, registry, topics
from worker.bundle import Bundle
from worker.config import Settings
from worker.errors import TextstreamError
from worker.route import output_topics
from worker.security import ClientSecurity

logger = logging.getLogger(__name__)

LOADING_SWITCH_INTERVAL_S = 0.0005  # see short_gil_slices
LOADING_NICE = 19  # see lower_priority
EVENTS_RETRY_S = 5.0  # after a broken connection to the models topic

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
        in a thread. Returns the new bundle (not yet serving) or None; raises what the load raised (any
        Exception: the registry's OSError, TensorFlow's errors, MemoryError, a BundleError)."""
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
        # The project's own errors say what is wrong; for any other kind the traceback says where.
        logger.error("model reload failed, still serving version %s: %s", self.version, self.last_error,
                     exc_info=None if isinstance(exc, TextstreamError) else exc)

    def status(self) -> dict[str, Any]:
        b = self.bundle
        return {
            "model_version": b.version if b else None,
            "labels": list(b.labels) if b else [],
            "text_fields": list(b.text_fields) if b else [],
            "loaded_at": b.loaded_at if b else None,
            "load_seconds": round(self.load_seconds, 3),
            "reloads": dict(self.reloads),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "registry": str(self.root),
        }


@contextlib.contextmanager
def short_gil_slices(seconds: float) -> Iterator[None]:
    """While a model version loads (about a second of Python in the loading thread), let the
    serving threads take the GIL back within `seconds` instead of Python's 5 ms: each of their many
    GIL waits per batch is shorter, which trims the latency bump of a hot reload (bench/reload.py)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def lower_priority(nice: int) -> None:
    """Give the calling thread a lower CPU priority (Linux schedules threads one by one): a model
    version loading beside the serving threads then yields the cores to them. bench/reload.py, 2
    alternating runs each: swap p99 176 and 166 ms at nice 19, 230 and 216 ms without."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:  # not permitted, or not Linux: load at normal priority
        logger.warning("could not lower the model loading thread's priority: %s", exc)


class Reloader:
    """Loads what the registry asks for beside the serving version and swaps it in, one reload at a
    time. `prepare` runs in the loading thread before each load (TensorFlow's import, the first
    time); `create_topics` creates the topics of a new version's labels before it serves;
    `crash` stops the worker when the first version cannot load."""

    def __init__(self, serving: Serving, *, prepare: Callable[[], None],
                 create_topics: Callable[[Sequence[str]], Awaitable[object]],
                 crash: Callable[[BaseException], Awaitable[object]]) -> None:
        self.serving = serving
        self._prepare, self._create_topics, self._crash = prepare, create_topics, crash
        self.ready = asyncio.Event()  # set once a version serves: the agent waits for it
        if serving.bundle is not None:  # handed a loaded version (tests): serve it at once
            self.ready.set()
        self._lock = asyncio.Lock()
        # Loading gets its own thread so a new version loads while the current one keeps serving.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load",
                                        initializer=lower_priority, initargs=(LOADING_NICE,))

    async def reload(self, reason: str) -> None:
        """Load what the registry asks for beside the current version; swap between batches."""
        async with self._lock:
            new = await self._load()
            if new is not None:
                await self._swap(new, reason)

    async def _load(self) -> Bundle | None:
        """The next version, loaded and with its topics; None if there is none or it failed (reported)."""
        try:
            with short_gil_slices(LOADING_SWITCH_INTERVAL_S):
                new = await asyncio.get_running_loop().run_in_executor(self._pool, self._load_next)
            if new is not None:
                await self._create_topics(new.labels)
        except Exception as exc:  # any failure: an OSError from the registry, TensorFlow, MemoryError
            # Whatever a load raises, the serving version stays; an escaping error would stop every
            # worker, and each restart would meet the same version again. CancelledError,
            # KeyboardInterrupt and SystemExit are not Exceptions: they still stop the task.
            self.serving.fail(exc)
            if self.serving.bundle is None:  # nothing to fall back to at start: fail fast and loud
                await self._crash(exc)
            else:  # free what the failed load left behind (half a graph after a MemoryError)
                await asyncio.get_running_loop().run_in_executor(self._pool, gc.collect)
            return None
        return new

    def _load_next(self) -> Bundle | None:
        self._prepare()  # TensorFlow comes with the first version, after the web pages are up
        return self.serving.poll()

    async def _swap(self, new: Bundle, reason: str) -> None:
        logger.info("model version %d ready (%s); swapping", new.version, reason)
        old = self.serving.swap(new)  # the agent reads serving.bundle once per batch
        self.ready.set()
        if old is None:
            return
        del old, new
        started = time.perf_counter()
        freed = await asyncio.get_running_loop().run_in_executor(self._pool, gc.collect)  # frees the old graph (~20 MB a reload)
        logger.info("released the previous version: %d objects in %.3fs", freed, time.perf_counter() - started)


async def create_output_topics(settings: Settings, access: ClientSecurity, labels: Sequence[str]) -> None:
    """Create (or, with TEXTSTREAM_CREATE_TOPICS=false, require) the topics a version with these labels
    writes, before it serves; labels without a topic of their own under this worker's prefix refuse it."""
    topics.check_label_topics(settings, labels)
    unknown = sorted(set(settings.thresholds) - set(labels))
    if unknown:
        logger.warning("TEXTSTREAM_MIN_CONFIDENCE_BY_LABEL names labels this version does not have: %s",
                       ", ".join(unknown))
    await topics.ensure_topics(settings.bootstrap_servers, output_topics(settings, labels), settings.topic_partitions,
                               security=access, spec=topics.TopicSpec.from_settings(settings))


async def follow_model_events(settings: Settings, access: ClientSecurity,
                              reload: Callable[[str], Awaitable[None]]) -> None:
    """Every worker reads every `texts.models` event (no consumer group): all switch at once.
    Polling the registry stays the fallback, so a broken connection here only delays reloads."""
    while True:
        consumer = AIOKafkaConsumer(settings.models_topic, bootstrap_servers=settings.bootstrap_servers,
                                    group_id=None, auto_offset_reset="latest", enable_auto_commit=False,
                                    **access.kwargs())
        try:
            await topics.ensure_topics(settings.bootstrap_servers, [settings.models_topic], 1, security=access,
                                       spec=topics.TopicSpec.from_settings(settings))
            await consumer.start()
            async for event in consumer:
                logger.info("model event %s", (event.value or b"")[:200].decode("utf-8", "replace"))
                await reload("models topic event")
        except Exception as exc:
            logger.warning("models topic listener: %s; retrying in %.0f s", exc, EVENTS_RETRY_S)
            await asyncio.sleep(EVENTS_RETRY_S)
        finally:
            await consumer.stop()
