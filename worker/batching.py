"""Stage 2: records taken from Kafka that the model has not started on yet, and how they become batches.

The model takes whatever waits the moment it is free, up to a batch: a batch is as large as what
arrived while the previous one ran. Under light load batches are small and start at once; as load
grows they grow with it, which spreads the model's fixed cost per call (256 LSTM steps, whatever
the batch) over more texts; at saturation they are full. A fixed deadline instead makes every
record wait for the next tick, even while the model is idle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """A bounded FIFO of items with their arrival times; `take` hands out batches.

    `linger`: how long a free model may wait for a partial batch to fill, counted from the arrival
    of its oldest item (0: start at once). `limit`: the most items that may wait; the producer of
    items waits for `room` beyond it, which holds the Kafka consumer back instead of buffering
    without end. `max_bytes` (with `size`, an item's bytes): the most bytes of items held, from
    `put_nowait` until the caller `release`s them (after their outputs were acknowledged), so taken
    items still count while they are labelled and sent. It admits while under `max_bytes`, so the
    last item admitted may pass it by its own size, and an item is always admitted when nothing is
    held: a single item larger than `max_bytes` waits its turn instead of stopping everything.
    """

    def __init__(self, batch_size: int, linger: float, limit: int, max_bytes: int | None = None,
                 size: Callable[[T], int] = lambda item: 0) -> None:
        if batch_size < 1 or limit < batch_size or linger < 0 or (max_bytes is not None and max_bytes < 1):
            raise ValueError("need batch_size >= 1, limit >= batch_size, linger >= 0 and max_bytes >= 1")
        self.batch_size, self.linger, self.limit = batch_size, linger, limit
        self.max_bytes, self._size = max_bytes, size
        self.held_bytes = 0  # of items put and not yet released
        self._items: deque[tuple[float, T]] = deque()
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        over_bytes = self.max_bytes is not None and self.held_bytes >= self.max_bytes
        return len(self._items) >= self.limit or over_bytes

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise OverflowError("backlog is full")
        self._items.append((time.monotonic(), item))
        self.held_bytes += self._size(item)
        self._arrived.set()

    def release(self, items: Iterable[T]) -> None:
        """Taken items the caller is done with (their outputs acknowledged): their bytes no longer count."""
        self.held_bytes -= sum(self._size(item) for item in items)
        self._space.set()

    async def room(self) -> None:
        """Returns once the backlog is not full."""
        while self.full():
            self._space.clear()
            await self._space.wait()

    async def take(self) -> list[T]:
        """The next batch: up to `batch_size` of the oldest items, once the batch is full or its
        oldest item has waited `linger`; waits for the first item when there is none."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        while len(self._items) < self.batch_size:
            left = self._items[0][0] + self.linger - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
        n = min(self.batch_size, len(self._items))
        batch = [self._items.popleft()[1] for _ in range(n)]
        self._space.set()
        return batch
