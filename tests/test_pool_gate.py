"""A real eSpeak engine pool behind the post-processing gate: while post-processing is behind, no
slot takes a batch (the job stays queued); when the stage has room, the next in line is taken."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from ttsd.config import Settings
from ttsd.engines import REGISTRY
from ttsd.jobs.model import SentenceBatch
from ttsd.jobs.slots.pool import EnginePool
from ttsd.keys import SynthesisSpec
from ttsd.pools import PoolSpec


@pytest.mark.slow
def test_no_slot_takes_a_batch_while_post_processing_is_behind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines=("espeak",), engine_slots=1)
    spec = REGISTRY["espeak"]
    voice = spec.voices[0]
    job = SynthesisSpec(
        spec.name, spec.version, voice.name, voice.speaker, voice.language, "Hello.", 1.0, None
    )
    behind = True

    async def scenario() -> None:
        nonlocal behind
        pool = EnginePool(settings, PoolSpec(("espeak",), 1), gate=lambda: not behind)
        await pool.start()
        try:
            await asyncio.wait_for(_until(lambda: pool.ready), 60)
            started: list[str] = []
            spoken: list[int] = []
            batch = SentenceBatch("t1", job, (0,), ("Hello there.",))
            task = asyncio.ensure_future(
                pool.synthesize(
                    batch, lambda i, pcm, rate: spoken.append(len(pcm)), lambda: started.append("t1")
                )
            )
            await asyncio.sleep(0.5)  # an open pool would have taken it at once (eSpeak: ms)
            assert not started and not spoken and pool.waiting == 1 and pool.busy == 0
            assert pool.unspoken("t1")
            behind = False
            pool.wake()
            result = await asyncio.wait_for(task, 30)
            assert started == ["t1"] and len(spoken) == 1 and spoken[0] > 0
            assert result.slot_seconds > 0 and pool.waiting == 0 and not pool.unspoken("t1")
        finally:
            await pool.stop()

    asyncio.run(scenario())


async def _until(check: Callable[[], bool]) -> None:
    while not check():  # noqa: ASYNC110 (the pool's state has no event to wait on)
        await asyncio.sleep(0.01)


@pytest.mark.slow
def test_a_batch_handed_to_a_process_behind_another_is_unspoken_until_it_begins(tmp_path: Path) -> None:
    """A process holds the batch it speaks and the next: the next is handed over (its caller is
    told it started) but still waits, which a busy worker's hand-back must see."""
    settings = Settings(data_dir=tmp_path, engines=("espeak",), engine_slots=1)
    spec = REGISTRY["espeak"]
    voice = spec.voices[0]
    job = SynthesisSpec(
        spec.name, spec.version, voice.name, voice.speaker, voice.language, "Hello.", 1.0, None
    )

    async def scenario() -> None:
        pool = EnginePool(settings, PoolSpec(("espeak",), 1))
        await pool.start()
        try:
            await asyncio.wait_for(_until(lambda: pool.ready), 60)
            long = tuple(f"Sentence number {i} of a long batch." for i in range(40))
            first = asyncio.ensure_future(
                pool.synthesize(SentenceBatch("long", job, tuple(range(40)), long), lambda *_: None)
            )
            started: list[str] = []
            second = asyncio.ensure_future(
                pool.synthesize(
                    SentenceBatch("next", job, (0,), ("Then this.",)),
                    lambda *_: None,
                    lambda: started.append("next"),
                )
            )
            await asyncio.wait_for(_until(lambda: bool(started)), 30)
            assert pool.unspoken("next") and not pool.unspoken("long") and not first.done()
            await asyncio.wait_for(asyncio.gather(first, second), 60)
            assert not pool.unspoken("next")
        finally:
            await pool.stop()

    asyncio.run(scenario())
