"""BatcherStats (no broker): bulk sizes, flush reasons and handler durations by outcome,
recorded by a real Batcher, and kept across batchers that share them (a reconnect)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from tests.support.broker import eventually
from trioworker.pipeline._batcher import Batcher, BatcherStats
from trioworker.pipeline._handlers import adapt


def batcher(handler, *, stats: BatcherStats | None = None, **options: object) -> Batcher[int]:  # type: ignore[no-untyped-def]
    return Batcher(
        handler,
        on_done=lambda bulk, error: None,
        on_unhandled=lambda bulk: None,
        stats=stats,
        **options,  # type: ignore[arg-type]
    )


async def until(condition: Callable[[], bool]) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, bool, within=5.0, interval=0.01)


async def test_flush_reasons_and_bulk_sizes() -> None:
    calls: list[list[int]] = []

    async def handle(bulk: list[int]) -> None:
        calls.append(bulk)

    b = batcher(handle, bulk_size=4, flush_interval=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        for i in range(10):  # two full bulks, then 2 items wait for the flush interval
            b.put(i)
        await until(lambda: sum(len(c) for c in calls) == 10)
        b.close()
    stats = b.stats
    assert [len(c) for c in calls] == [4, 4, 2]
    assert (stats.flushed_by_size, stats.flushed_by_time) == (2, 1)
    assert (stats.bulks, stats.items) == (3, 10)
    assert stats.bulk_sizes.count == 3
    assert stats.bulk_sizes.sum == 10
    assert dict(stats.bulk_sizes.cumulative())["2.0"] == 1  # the one bulk of 2
    assert dict(stats.bulk_sizes.cumulative())["4.0"] == 3


async def test_handler_durations_by_outcome() -> None:
    async def handle(bulk: list[int]) -> None:
        kind = bulk[0]
        if kind == 0:
            await trio.sleep(0.05)
        elif kind == 1:
            raise RuntimeError("boom")
        elif kind == 2:
            await trio.sleep(10)  # past the timeout
        else:
            await trio.sleep_forever()  # cancelled below

    stats = BatcherStats()
    timed = batcher(adapt(handle, timeout=0.1), stats=stats, concurrency=3)
    untimed = batcher(handle, stats=stats)  # for the call that is cancelled, not timed out
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timed.run)
        nursery.start_soon(untimed.run)
        for kind in (0, 1, 2):
            timed.put(kind)
        untimed.put(3)
        finished = stats.durations.values()
        await until(lambda: sum(h.count for h in finished) == 3 and stats.running == 1)
        assert stats.running == 1  # the one sleeping forever
        nursery.cancel_scope.cancel()
    d = stats.durations
    assert {k: h.count for k, h in d.items()} == {
        "ok": 1,
        "error": 1,
        "timeout": 1,
        "cancelled": 1,
    }
    assert 0.04 <= d["ok"].sum < 5
    assert 0.09 <= d["timeout"].sum < 5
    assert stats.running == 0


async def test_stats_shared_by_successive_batchers_keep_counting() -> None:
    """The AMQP backend makes a new batcher per connection; the route's stats carry over."""
    stats = BatcherStats()

    async def handle(bulk: list[int]) -> None:
        pass

    for _ in range(2):
        b = batcher(handle, stats=stats)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)
            for i in range(3):
                b.put(i)
            await until(lambda: not (b.buffered or stats.running))  # noqa: B023 - awaited here
            b.close()
        assert b.stats is stats
    assert (stats.bulks, stats.items, stats.flushed_by_size) == (6, 6, 6)
    assert stats.durations["ok"].count == 6


async def test_batchers_sharing_stats_are_idle_on_their_own() -> None:
    """``running`` is shared (a gauge for the route); idleness is each batcher's own: one
    finishing its call is idle although the other is still busy, and the other is not."""
    stats = BatcherStats()
    release = trio.Event()
    quick_done = trio.Event()

    async def slow(bulk: list[int]) -> None:
        await release.wait()

    async def quick(bulk: list[int]) -> None:
        quick_done.set()

    busy, other = batcher(slow, stats=stats), batcher(quick, stats=stats)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy.run)
        nursery.start_soon(other.run)
        busy.put(1)
        await until(lambda: stats.running == 1)
        other.put(2)
        with trio.fail_after(5):
            await quick_done.wait()
        with trio.fail_after(1):
            await other.wait_idle()
        assert stats.running == 1
        with trio.move_on_after(0.1) as scope:
            await busy.wait_idle()
        assert scope.cancelled_caught
        release.set()
        with trio.fail_after(5):
            await busy.wait_idle()
        busy.close()
        other.close()
    assert stats.running == 0
    assert stats.durations["ok"].count == 2
