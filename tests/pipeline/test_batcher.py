"""The batcher on its own (no broker): bulk forming, flushing, concurrency, close, cancel.

Timing runs on trio's ``MockClock`` with autojump (the ``autojump_clock`` fixture): virtual
time jumps ahead whenever every task is blocked, so "60 s later" costs nothing and times can
be asserted exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trioworker import Batcher


class Recorder:
    """Collects what a batcher reports: handler calls, on_done and on_unhandled."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.call_times: list[float] = []
        self.done: list[tuple[list[int], BaseException | None]] = []
        self.unhandled: list[list[int]] = []
        self.running = 0
        self.max_running = 0

    def on_done(self, bulk: list[int], error: BaseException | None) -> None:
        self.done.append((list(bulk), error))

    def on_unhandled(self, bulk: list[int]) -> None:
        self.unhandled.append(list(bulk))

    def handler(
        self, body: Callable[[list[int]], Awaitable[object]] | None = None
    ) -> Callable[[list[int]], Awaitable[None]]:
        async def handle(bulk: list[int]) -> None:
            self.calls.append(list(bulk))
            self.call_times.append(trio.current_time())
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            try:
                if body is not None:
                    await body(bulk)
            finally:
                self.running -= 1

        return handle

    def batcher(
        self,
        body: Callable[[list[int]], Awaitable[object]] | None = None,
        **options: float,
    ) -> Batcher[int]:
        return Batcher(
            self.handler(body),
            on_done=self.on_done,
            on_unhandled=self.on_unhandled,
            **options,  # type: ignore[arg-type]
        )


async def sleep_for(seconds: float) -> Callable[[list[int]], Awaitable[None]]:
    async def body(bulk: list[int]) -> None:
        await trio.sleep(seconds)

    return body


def blocked_until(event: trio.Event) -> Callable[[list[int]], Awaitable[None]]:
    async def body(bulk: list[int]) -> None:
        await event.wait()

    return body


async def test_full_bulks_go_out_at_bulk_size_without_waiting_for_the_flush_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=3, flush_interval=60)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        for i in range(7):
            batcher.put(i)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.calls == [[0, 1, 2], [3, 4, 5]]
        assert rec.call_times == [start, start]
        await trio.sleep(61)
        batcher.close()
    assert rec.calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert rec.call_times[2] == pytest.approx(start + 60)
    assert [bulk for bulk, _ in rec.done] == rec.calls
    assert rec.unhandled == []


async def test_bulk_size_1_hands_over_each_item_alone_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=1, flush_interval=60)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        for i in range(3):
            batcher.put(i)
        await trio.testing.wait_all_tasks_blocked()
        batcher.close()
    assert rec.calls == [[0], [1], [2]]
    assert rec.call_times == [start] * 3


async def test_partial_bulk_flushes_flush_interval_after_its_first_item_not_its_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=10, flush_interval=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        await trio.testing.wait_all_tasks_blocked()
        first = trio.current_time()
        batcher.put(1)
        await trio.sleep(3)
        batcher.put(2)
        await trio.sleep(1)
        batcher.put(3)  # a "since the last item" timer would flush at first + 9
        await trio.sleep(10)
        assert rec.calls == [[1, 2, 3]]
        assert rec.call_times == [pytest.approx(first + 5)]
        # The next bulk gets its own interval, counted from its own first item.
        await trio.sleep(2)
        second = trio.current_time()
        batcher.put(4)
        await trio.sleep(4.5)
        assert len(rec.calls) == 1
        await trio.sleep(1)
        batcher.close()
    assert rec.calls == [[1, 2, 3], [4]]
    assert rec.call_times[1] == pytest.approx(second + 5)


async def test_flush_interval_zero_hands_over_what_is_there_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=10, flush_interval=0)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        batcher.put(1)
        batcher.put(2)
        await trio.testing.wait_all_tasks_blocked()
        batcher.close()
    assert rec.calls == [[1, 2]]
    assert rec.call_times == [start]


async def test_concurrency_1_runs_one_handler_call_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(await sleep_for(1), bulk_size=1, concurrency=1)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        for i in range(5):
            batcher.put(i)
        await trio.sleep(10)
        batcher.close()
    assert rec.max_running == 1
    assert rec.calls == [[0], [1], [2], [3], [4]]
    assert rec.call_times == [pytest.approx(start + i) for i in range(5)]


async def test_concurrency_3_runs_up_to_3_calls_at_once_and_never_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(await sleep_for(1), bulk_size=1, concurrency=3)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        for i in range(10):
            batcher.put(i)
        await trio.sleep(20)
        batcher.close()
    assert rec.max_running == 3
    assert sorted(item for bulk in rec.calls for item in bulk) == list(range(10))
    # Waves of three: 0-2 at t=0, 3-5 at t=1, 6-8 at t=2, 9 at t=3.
    assert [t - start for t in rec.call_times] == pytest.approx([0] * 3 + [1] * 3 + [2] * 3 + [3])
    assert len(rec.done) == 10
    assert all(error is None for _, error in rec.done)


async def test_close_hands_buffered_items_to_on_unhandled_and_lets_the_running_call_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    release = trio.Event()
    batcher = rec.batcher(blocked_until(release), bulk_size=3, flush_interval=60)
    run_returned = trio.Event()

    async def run() -> None:
        await batcher.run()
        run_returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        for i in range(5):
            batcher.put(i)  # [0, 1, 2] is handed over; 3 and 4 wait behind it
        await trio.testing.wait_all_tasks_blocked()
        assert rec.calls == [[0, 1, 2]]
        assert batcher.buffered == 2
        batcher.close()
        assert rec.unhandled == [[3, 4]]
        assert batcher.buffered == 0
        await trio.sleep(5)
        assert not run_returned.is_set(), "run() must wait for the running handler call"
        release.set()
    assert run_returned.is_set()
    assert rec.done == [([0, 1, 2], None)]
    assert rec.calls == [[0, 1, 2]]


async def test_close_hands_a_partial_bulk_waiting_for_its_flush_to_on_unhandled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=5, flush_interval=60)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        batcher.put(1)
        batcher.put(2)
        await trio.sleep(10)  # the bulk [1, 2] waits for more, or for t+60
        start = trio.current_time()
        batcher.close()
    assert trio.current_time() == start, "run() must return at once, not at the flush"
    assert rec.unhandled == [[1, 2]]
    assert rec.calls == []
    assert rec.done == []


async def test_a_bulk_waiting_for_a_concurrency_slot_at_close_is_unhandled_not_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """close() "stops forming bulks at once": a bulk not yet handed to a handler — here
    waiting for one of the ``concurrency`` slots — must not start once the batcher closed."""
    rec = Recorder()
    release = trio.Event()
    batcher = rec.batcher(blocked_until(release), bulk_size=1, concurrency=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        for i in range(4):
            batcher.put(i)  # 0 and 1 run; [2] waits for a slot; 3 is buffered
        await trio.testing.wait_all_tasks_blocked()
        assert rec.calls == [[0], [1]]
        batcher.close()
        release.set()
    assert sorted(rec.calls) == [[0], [1]], "a handler call started after close()"
    assert sorted(rec.unhandled) == [[2], [3]]
    assert sorted(bulk for bulk, _ in rec.done) == [[0], [1]]


async def test_put_after_close_goes_straight_to_on_unhandled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=2, flush_interval=1)
    batcher.close()
    assert batcher.closed
    batcher.put(7)
    assert rec.unhandled == [[7]]
    await batcher.run()  # returns at once: nothing to do
    batcher.put(8)
    assert rec.unhandled == [[7], [8]]
    assert rec.calls == []


async def test_handler_exception_is_reported_to_on_done_and_the_batcher_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    boom = ValueError("boom")

    async def body(bulk: list[int]) -> None:
        if bulk == [0, 1]:
            raise boom

    batcher = rec.batcher(body, bulk_size=2, flush_interval=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        for i in range(4):
            batcher.put(i)
        await trio.sleep(5)
        batcher.close()
    assert rec.done == [([0, 1], boom), ([2, 3], None)]
    assert rec.unhandled == []


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_cancelling_run_while_a_handler_runs_reports_that_bulk_as_unhandled(
    concurrency: int, autojump_clock: trio.testing.MockClock
) -> None:
    rec = Recorder()
    cancelled: list[list[int]] = []

    async def body(bulk: list[int]) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(bulk)
            raise

    batcher = rec.batcher(body, bulk_size=2, flush_interval=1, concurrency=concurrency)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.run)
            for i in range(2 * concurrency):
                batcher.put(i)
            await trio.sleep(3)
            assert rec.running == concurrency
            scope.cancel()
    expected = [[2 * n, 2 * n + 1] for n in range(concurrency)]
    assert sorted(cancelled) == expected
    assert sorted(rec.unhandled) == expected
    assert rec.done == [], "a cancelled handler did not finish: not on_done"


async def test_stats_count_bulks_flushed_by_size_and_by_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=3, flush_interval=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        for i in range(7):  # [0,1,2] [3,4,5] by size, [6] by time
            batcher.put(i)
        await trio.sleep(5)
        batcher.put(7)  # [7] by time
        await trio.sleep(5)
        for i in range(8, 11):  # [8,9,10] by size
            batcher.put(i)
        await trio.sleep(5)
        batcher.close()
    stats = batcher.stats
    assert rec.calls == [[0, 1, 2], [3, 4, 5], [6], [7], [8, 9, 10]]
    assert (stats.flushed_by_size, stats.flushed_by_time) == (3, 2)
    assert stats.bulks == 5
    assert stats.items == 11
    assert stats.running == 0


async def test_partial_bulk_filled_before_its_deadline_counts_as_flushed_by_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(bulk_size=3, flush_interval=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        batcher.put(1)
        await trio.sleep(4)
        batcher.put(2)
        await trio.sleep(4)
        start = trio.current_time()
        batcher.put(3)
        await trio.testing.wait_all_tasks_blocked()
        batcher.close()
    assert rec.calls == [[1, 2, 3]]
    assert rec.call_times == [start]
    assert (batcher.stats.flushed_by_size, batcher.stats.flushed_by_time) == (1, 0)


async def test_wait_idle_returns_at_once_when_idle_and_waits_for_the_running_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(await sleep_for(2), bulk_size=1)
    start = trio.current_time()
    await batcher.wait_idle()  # nothing ever ran
    assert trio.current_time() == start
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        await trio.sleep(1)
        batcher.put(1)  # runs from t=1 until t=3
        await trio.testing.wait_all_tasks_blocked()
        assert batcher.stats.running == 1
        await batcher.wait_idle()
        assert trio.current_time() == pytest.approx(start + 3)
        assert batcher.stats.running == 0
        idle_at = trio.current_time()
        await batcher.wait_idle()  # idle again: returns at once
        assert trio.current_time() == idle_at
        batcher.close()
    assert rec.done == [([1], None)]


async def test_wait_idle_waits_for_every_concurrent_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    batcher = rec.batcher(await sleep_for(2), bulk_size=1, concurrency=2)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(batcher.run)
        batcher.put(1)  # runs from t=0 until t=2
        await trio.sleep(1)
        batcher.put(2)  # runs from t=1 until t=3
        await trio.testing.wait_all_tasks_blocked()
        assert batcher.stats.running == 2
        await batcher.wait_idle()
        assert trio.current_time() == pytest.approx(start + 3)
        batcher.close()
    assert len(rec.done) == 2


@pytest.mark.parametrize(
    "options",
    [
        {"bulk_size": 0},
        {"concurrency": 0},
        {"flush_interval": -1},
        {"flush_interval": float("nan")},
    ],
)
def test_invalid_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Recorder().batcher(**options)
