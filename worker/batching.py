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
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """A bounded FIFO of items with their arrival times; `take` hands out batches.

    `linger`: how long a free model may wait for a partial batch to fill, counted from the arrival
    of its oldest item (0: start at once). `limit`: the most items that may wait; the producer of
    items waits for `room` beyond it, which holds the Kafka consumer back instead of buffering
    without end.
    """

    def __init__(self, batch_size: int, linger: float, limit: int) -> None:
        if batch_size < 1 or limit < batch_size or linger < 0:
            raise ValueError("need batch_size >= 1, limit >= batch_size and linger >= 0")
        self.batch_size, self.linger, self.limit = batch_size, linger, limit
        self._items: deque[tuple[float, T]] = deque()
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.limit

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise OverflowError("backlog is full")
        self._items.append((time.monotonic(), item))
        self._arrived.set()

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
