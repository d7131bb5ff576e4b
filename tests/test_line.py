"""The line for a free engine slot: earliest deadline first, first come first served among equals."""

from __future__ import annotations

import asyncio

import pytest

from ttsd.jobs.slots.line import Line


class Room:
    def __init__(self) -> None:
        self.free = 0

    def take(self) -> int | None:
        if self.free:
            self.free -= 1
            return 1
        return None


def never_fails() -> None:
    return None


async def served_in_order(deadlines: list[float], cancel: int | None = None) -> list[int]:
    line, room, order = Line(), Room(), []

    async def wait(i: int, deadline: float) -> None:
        await line.take(room.take, never_fails, deadline)
        order.append(i)

    tasks = []
    for i, deadline in enumerate(deadlines):
        tasks.append(asyncio.create_task(wait(i, deadline)))
        await asyncio.sleep(0)  # they arrive in this order
    if cancel is not None:
        tasks[cancel].cancel()
        await asyncio.sleep(0)
    for _ in deadlines:
        room.free += 1
        line.wake()
        for _ in range(3):
            await asyncio.sleep(0)
    return order


def test_the_earliest_deadline_is_served_first() -> None:
    # A live turn's later sentence (needed in 5 s) arrived first; a new turn's first sentence
    # (needed now) overtakes it; HTTP requests (needed as they arrive) keep their order.
    assert asyncio.run(served_in_order([105.0, 100.0, 101.0, 101.0, 103.0])) == [1, 2, 3, 4, 0]


def test_equal_deadlines_are_first_come_first_served() -> None:
    assert asyncio.run(served_in_order([7.0] * 5)) == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_leaves_the_line() -> None:
    assert asyncio.run(served_in_order([1.0, 2.0, 3.0], cancel=1)) == [0, 2]


def test_a_newcomer_more_urgent_than_the_line_takes_free_room_at_once() -> None:
    async def run() -> int | None:
        line, room = Line(), Room()
        later = asyncio.create_task(line.take(room.take, never_fails, 50.0))
        await asyncio.sleep(0)
        room.free = 1  # room, and the waiter not yet woken: the urgent newcomer takes it
        got = await asyncio.wait_for(line.take(room.take, never_fails, 1.0), 1)
        later.cancel()
        return got

    assert asyncio.run(run()) == 1


def test_a_check_that_fails_wakes_and_fails_every_waiter() -> None:
    class Down(Exception):
        pass

    async def run() -> list[BaseException | None]:
        line, room, down = Line(), Room(), False

        def check() -> None:
            if down:
                raise Down

        waiters = [asyncio.create_task(line.take(room.take, check, float(i))) for i in range(3)]
        await asyncio.sleep(0)
        down = True
        line.wake(everyone=True)
        return await asyncio.gather(*waiters, return_exceptions=True)

    assert all(isinstance(r, Down) for r in asyncio.run(run()))


@pytest.mark.parametrize("n", [1, 50])
def test_every_waiter_is_served_once(n: int) -> None:
    assert sorted(asyncio.run(served_in_order([float(i % 7) for i in range(n)]))) == list(range(n))


def test_a_live_sentence_is_due_when_what_comes_before_it_has_played() -> None:
    """A context's deadlines: the next sentence when the audio sent has played out, one opened
    ahead of it once that one has played too (at the pace of what was sent), so the line does
    not put it beside other contexts' next sentences."""
    import time

    import numpy as np

    from ttsd import audio
    from ttsd.live.output import Output

    out = Output(audio.format_at("pcm", None), 22050, 1.0)
    before = time.monotonic()
    assert before <= out.needed() <= time.monotonic()  # nothing sent: needed at once
    assert out.needed(2.0) >= before + 2.0
    asyncio.run(out.encode(np.zeros(22050 * 3, np.int16)))  # three seconds of "thirty letters"
    out.weight += 30
    started = time.monotonic()
    assert started + 2.9 <= out.needed() <= time.monotonic() + 3.0
    assert out.expected("ten letter") == pytest.approx(1.0)
    assert out.needed(out.expected("ten letter")) >= started + 3.9
