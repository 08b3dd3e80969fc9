"""How waiting records become model batches: at once when the model is free, never more than a batch,
in arrival order, and a full backlog holds the consumer back."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.batching import Backlog


async def test_a_free_model_takes_what_waits_at_once() -> None:
    backlog: Backlog[int] = Backlog(batch_size=4, linger=0, limit=8)
    for i in range(3):
        backlog.put_nowait(i)
    started = time.monotonic()
    assert await backlog.take() == [0, 1, 2]
    assert time.monotonic() - started < 0.05
    assert len(backlog) == 0


async def test_batches_are_capped_and_in_arrival_order() -> None:
    backlog: Backlog[int] = Backlog(batch_size=4, linger=10, limit=16)
    for i in range(10):
        backlog.put_nowait(i)
    # Full batches go at once even with a long linger; the remainder waits for it.
    assert await backlog.take() == [0, 1, 2, 3]
    assert await backlog.take() == [4, 5, 6, 7]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backlog.take(), 0.1)
    assert len(backlog) == 2


async def test_take_waits_for_the_first_record() -> None:
    backlog: Backlog[str] = Backlog(batch_size=4, linger=0, limit=8)
    taking = asyncio.create_task(backlog.take())
    await asyncio.sleep(0.05)
    assert not taking.done()
    backlog.put_nowait("a")
    assert await asyncio.wait_for(taking, 1) == ["a"]


async def test_linger_counts_from_the_oldest_record_and_gathers_later_ones() -> None:
    backlog: Backlog[int] = Backlog(batch_size=100, linger=0.2, limit=200)
    backlog.put_nowait(0)
    started = time.monotonic()
    taking = asyncio.create_task(backlog.take())
    await asyncio.sleep(0.05)
    backlog.put_nowait(1)
    batch = await asyncio.wait_for(taking, 2)
    waited = time.monotonic() - started
    assert batch == [0, 1]
    assert 0.15 <= waited < 1.0


async def test_linger_ends_early_when_the_batch_fills() -> None:
    backlog: Backlog[int] = Backlog(batch_size=3, linger=5, limit=6)
    backlog.put_nowait(0)
    taking = asyncio.create_task(backlog.take())
    await asyncio.sleep(0.02)
    backlog.put_nowait(1)
    backlog.put_nowait(2)
    assert await asyncio.wait_for(taking, 1) == [0, 1, 2]


async def test_a_full_backlog_has_room_again_once_a_batch_is_taken() -> None:
    backlog: Backlog[int] = Backlog(batch_size=2, linger=0, limit=2)
    backlog.put_nowait(0)
    backlog.put_nowait(1)
    assert backlog.full()
    with pytest.raises(OverflowError):
        backlog.put_nowait(2)
    room = asyncio.create_task(backlog.room())
    await asyncio.sleep(0.05)
    assert not room.done()
    assert await backlog.take() == [0, 1]
    await asyncio.wait_for(room, 1)
    backlog.put_nowait(2)
    assert await backlog.take() == [2]


@pytest.mark.parametrize(("batch_size", "linger", "limit", "max_bytes"),
                         [(0, 0, 1, None), (4, 0, 3, None), (4, -1, 8, None), (4, 0, 8, 0)])
def test_bad_arguments_are_refused(batch_size: int, linger: float, limit: int, max_bytes: int | None) -> None:
    with pytest.raises(ValueError):
        Backlog(batch_size, linger, limit, max_bytes)


async def test_bytes_count_from_put_until_release_and_past_the_budget_it_is_full() -> None:
    backlog: Backlog[bytes] = Backlog(batch_size=4, linger=0, limit=100, max_bytes=10, size=len)
    backlog.put_nowait(b"x" * 4)
    backlog.put_nowait(b"x" * 4)
    assert not backlog.full() and backlog.held_bytes == 8
    backlog.put_nowait(b"x" * 5)  # admitted while under the budget: the last one may pass it
    assert backlog.full() and backlog.held_bytes == 13
    with pytest.raises(OverflowError):
        backlog.put_nowait(b"y")
    batch = await backlog.take()
    assert len(batch) == 3 and backlog.held_bytes == 13 and backlog.full()  # taken, not yet released
    room = asyncio.create_task(backlog.room())
    await asyncio.sleep(0.05)
    assert not room.done()  # taking a batch frees no bytes: they are still labelled and sent
    backlog.release(batch)
    await asyncio.wait_for(room, 1)
    assert backlog.held_bytes == 0 and not backlog.full()


async def test_a_record_larger_than_the_budget_is_admitted_alone() -> None:
    backlog: Backlog[bytes] = Backlog(batch_size=4, linger=0, limit=100, max_bytes=10, size=len)
    huge = b"h" * 1000
    backlog.put_nowait(huge)  # nothing held: admitted, so a huge record cannot deadlock the worker
    assert backlog.full()
    assert await backlog.take() == [huge]
    backlog.release([huge])
    backlog.put_nowait(b"small")
    assert await backlog.take() == [b"small"]
