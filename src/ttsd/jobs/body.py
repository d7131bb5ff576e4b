"""The one job body: pieces -> synthesize what is missing -> join -> encode -> store -> index.

Every runner calls ``run_job`` through the one lifecycle (``jobs.lifecycle``): the embedded queue
on the API's event loop, the Celery worker on its own loop, the offline tools on theirs. It is a
coroutine because it waits on two scarce things and must not hold either while waiting for the
other: an engine slot (``JobHost.synthesizer``: processes or threads that only speak sentences)
and the post-processing stage (``JobHost.post``: a bounded thread pool for reading, encoding,
storing and indexing). The slot is released the moment its engine has spoken the last sentence of
a batch; everything after that runs here, beside the slots.

Two cache levels. The whole text (master and formats) answers repeats with one lookup and never
reaches this function. Below it, every sentence's audio is a piece (``jobs.pieces``), so texts
built from the same templates share their common sentences: a job loads the pieces that exist,
streams the leading ones at once, and asks the engine only for the rest. A piece another job is
making right now is awaited, not made again (``jobs.flights``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any

import numpy as np

from .. import audio
from ..errors import BackendUnavailable, JobError, StorageError
from ..state.base import Stage
from .assembly import InOrder
from .flights import await_flight, await_remote
from .host import JobHost
from .made import Made, Tries
from .model import Job, JobOutcome, Reporter, SentenceBatch
from .pieces import cached_master, keep_text, load_marks, load_piece, load_pieces, piece_keys
from .writer import PieceWriter, keep_apart, let_go

log = logging.getLogger("ttsd.jobs")

# A piece that another job failed to make is tried again, by this job, this many times in all.
_ROUNDS = 3
# Markers on a round's arrival queue, beside sentence indices.
_STARTED, _ENDED = -2, -1


def _progress(pieces: list[Any]) -> int:
    """Synthesis is the first 80 % of a job's progress."""
    return int(80 * sum(p is not None for p in pieces) / len(pieces))


async def _make_master(job: Job, host: JobHost, reporter: Reporter, tries: Tries) -> Made:
    spec = job.spec
    rate = host.sample_rates[spec.engine]
    sentences = job.sentences
    n = len(sentences)
    reuse = spec.engine in host.reuse_engines
    keys = piece_keys(spec, sentences, job.speeds)
    pieces: list[audio.Pcm16 | None] = (
        await host.run(load_pieces, host.store, host.index, keys, rate, host.memory) if reuse else [None] * n
    )
    cached = [p.nbytes for p in pieces if p is not None]
    tries.making = made = Made(np.zeros(0, np.int16), rate, n, len(cached), arrived=sum(cached))
    out = InOrder(reporter, pieces, rate, job, tries)
    # Still queued: the job leaves the queue when an engine slot takes its first sentence (or at
    # once if it needs none), which is what the queue's depth and Retry-After count. A job run
    # again (handed on from a lost worker) keeps the stage and progress it had reached.
    was = reporter.status
    again = was.stage is not Stage.QUEUED
    await reporter.stage(
        was.stage if again else Stage.QUEUED,
        max(was.progress, _progress(pieces)) if again else 0,
        sentences=n,
        sentences_reused=made.reused,
    )
    await out.flush()  # cached leading sentences go out before any engine is asked
    try:
        for _ in range(_ROUNDS):
            missing = [i for i in range(n) if pieces[i] is None]
            if not missing:
                break
            await _round(job, host, reporter, out, sentences, pieces, keys, missing, made)
        else:
            raise JobError("the sentences of this text could not be made")
        made.pcm = await out.end()
    except BaseException:
        await keep_apart(host, made)
        raise
    made.at = dict(zip(keys, out.joiner.at, strict=True))
    made.marks = out.marks(job.layout)
    return made


async def _round(
    job: Job,
    host: JobHost,
    reporter: Reporter,
    out: InOrder,
    sentences: Sequence[str],
    pieces: list[audio.Pcm16 | None],
    keys: list[str],
    missing: list[int],
    made: Made,
) -> None:
    """Make or await every missing sentence once. A sentence whose maker gave up stays missing."""
    spec = job.spec
    rate = made.rate
    reuse = spec.engine in host.reuse_engines
    own: list[int] = []
    waits: dict[int, Coroutine[Any, Any, audio.Pcm16 | None]] = {}
    claimed: list[str] = []  # in-process flights this job must resolve or abandon
    remote: list[str] = []  # cross-process claims this job holds
    tasks: list[asyncio.Task[Any]] = []
    batch: asyncio.Task[Any] | None = None
    arrivals: asyncio.Queue[tuple[int, audio.Pcm16 | None]] = asyncio.Queue()

    def on_sentence(i: int, pcm: audio.Pcm16, sample_rate: int) -> None:
        made.arrived += pcm.nbytes
        arrivals.put_nowait((i, pcm))

    async def waited(i: int, wait: Awaitable[audio.Pcm16 | None]) -> None:
        arrivals.put_nowait((i, pcm := await wait))
        made.arrived += 0 if pcm is None else pcm.nbytes

    writer = PieceWriter(host, made, remote)  # what this job makes, on its way to the cache
    ended = False
    # From the first flight claimed on, a failure (Redis away while claiming or reporting) must
    # let the flights go: the job is tried again in place, and its next try would wait on them.
    try:
        for i in missing:
            if not reuse:
                own.append(i)
                continue
            flight = host.flights.claim(keys[i])
            if flight is not None:
                waits[i] = await_flight(flight)
            else:
                claimed.append(keys[i])
                own.append(i)
        if host.claims is not None and own and reuse:
            granted = await host.claims.claim([keys[i] for i in own], job.task_id)
            for i, ok in zip(list(own), granted, strict=True):
                if ok:
                    remote.append(keys[i])
                else:
                    own.remove(i)
                    load = functools.partial(
                        host.run, load_piece, host.store, host.index, keys[i], rate, host.memory
                    )
                    waits[i] = await_remote(host.claims, keys[i], load)
        tasks += [asyncio.create_task(waited(i, w)) for i, w in waits.items()]
        if own:
            speeds = tuple(job.speeds[i] for i in own) if job.speeds else None
            request = SentenceBatch(
                job.task_id, spec, tuple(own), tuple(sentences[i] for i in own), job.deadline, speeds
            )
            batch = asyncio.create_task(
                host.synthesizer.synthesize(
                    request, on_sentence, lambda: arrivals.put_nowait((_STARTED, None))
                )
            )
            batch.add_done_callback(lambda _: arrivals.put_nowait((_ENDED, None)))
        else:
            await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
        expected = len(own) + len(waits)
        batch_open = batch is not None
        while expected or batch_open:
            i, pcm = await arrivals.get()
            if i == _STARTED:
                await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
                continue
            if i == _ENDED:  # a failure ends the job; success leaves nothing to wait for
                assert batch is not None
                batch_open = False
                result = batch.result()
                made.slot_seconds += result.slot_seconds
                made.synthesis_seconds += result.synthesis_seconds
                continue
            expected -= 1
            if i in waits and keys[i] in claimed:
                # Awaited from another process under this job's own flight: waiters on that flight
                # (other jobs here, or this text's repeats of the sentence) must hear now what came
                # of it, or a repeat would wait for this very loop to end.
                claimed.remove(keys[i])
                if pcm is None:
                    host.flights.abandon(keys[i])
                else:
                    host.flights.resolve(keys[i], pcm)
                    host.flights.landed([keys[i]])  # read from the cache: it is there
            if pcm is None:
                continue  # its maker gave up; the next round makes it here
            pieces[i] = pcm
            if i in waits:
                made.merged += 1
            else:
                made.synthesized += 1
                made.synthesized_audio += len(pcm) / rate
                if reuse:
                    host.flights.resolve(keys[i], pcm)
                    claimed.remove(keys[i])
                    writer.add(keys[i], pcm)
            await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
            await out.flush()
        ended = True
    finally:
        for task in tasks:
            task.cancel()
        for wait in waits.values():
            if inspect.getcoroutinestate(wait) == inspect.CORO_CREATED:
                wait.close()  # never started: its task (if any) was cancelled first
        if batch is not None and not batch.done():
            batch.cancel()
            with contextlib.suppress(BaseException):
                await batch
        for key in claimed:
            host.flights.abandon(key)
        # A batch's last sentences can go with the text's own file, when it holds them unchanged.
        await writer.close(hold=ended and audio.holds_samples(audio.get_format(job.fmt), rate))
        if host.claims is not None and remote:  # the claims of sentences not made
            with contextlib.suppress(JobError, BackendUnavailable):  # they lapse on their own
                await host.claims.release(remote)
            remote.clear()


async def _made(job: Job, host: JobHost, reporter: Reporter, tries: Tries) -> Made:
    cached = await host.run(cached_master, job.key, host.store, host.index)
    if cached is None:
        return await _make_master(job, host, reporter, tries)
    made = Made(cached[0], cached[1], from_cache=True)
    if job.layout is not None and job.layout.marks:
        kept = await host.run(load_marks, host.store, host.index, job.key)
        made.marks = kept or ()
    return made


def _encode(job: Job, pcm: audio.Pcm16, rate: int, with_master: bool) -> tuple[bytes | None, bytes]:
    fmt = audio.get_format(job.fmt)
    master = audio.encode(pcm, rate, audio.MASTER) if with_master else None
    return master, audio.encode(pcm, rate, fmt)


async def run_job(job: Job, host: JobHost, reporter: Reporter, tries: Tries | None = None) -> JobOutcome:
    """One try of a job. A runner that tries again after a storage fault passes the same ``tries``
    to each: what an earlier try made is stored, never made again."""
    with host.post.tally():  # what the job costs post-processing, for admission
        return await _run(job, host, reporter, tries or Tries())


async def _run(job: Job, host: JobHost, reporter: Reporter, tries: Tries) -> JobOutcome:
    made = tries.made or await _made(job, host, reporter, tries)
    tries.made = made
    storing = False
    try:
        await reporter.stage(Stage.ENCODING, 85)
        # With its sentences cached as pieces a text's master is redundant (any other format of it
        # is a near-hit, assembled from them), so it is kept only for engines without sentence
        # reuse: one encode, one file and one index write fewer per text. A text spoken live was cut
        # otherwise than it splits, so its pieces would not assemble it again: it keeps its master.
        with_master = not made.from_cache and (job.spec.engine not in host.reuse_engines or job.live)
        master, data = await host.run(_encode, job, made.pcm, made.rate, with_master)
        await reporter.stage(Stage.STORING, 95)
        duration = len(made.pcm) / made.rate
        pieces = {key: (made.at[key], pcm) for key, pcm in made.unstored.items()}
        storing = True
        entry, evicted = await host.run(
            keep_text, host.store, host.index, job.key, audio.get_format(job.fmt), made.rate, duration,
            master, data, host.cache_ttl, host.cache_max_bytes, () if made.from_cache else made.marks,
            pieces, host.memory,
        )  # fmt: skip
        made.unstored.clear()
        await host.run(made.record, host.stats, job)
    except StorageError:
        raise  # the next try stores what this one made (``Tries``)
    except BaseException as exc:
        # Cancelled (a timeout) while storing, the store goes on in its thread: storing the same
        # sentences apart as well would leave one of the two objects unnamed.
        if not (storing and isinstance(exc, asyncio.CancelledError)):
            await keep_apart(host, made)
        raise
    finally:
        await let_go(host, made)
        if not made.from_cache and not tries.ended:
            # Streams end once the text is stored and counted, so a repeat right after a stream is
            # a hit. They end cleanly even if storing failed: every sample was already sent.
            await reporter.audio_end()
            tries.ended = True
    return JobOutcome(
        entry=entry,
        synthesized=made.synthesized > 0,
        audio_seconds=len(made.pcm) / made.rate,
        synthesis_seconds=made.synthesis_seconds,
        slot_seconds=made.slot_seconds,
        sentences=made.sentences,
        sentences_reused=made.reused,
        sentences_merged=made.merged,
        evicted=evicted,
        marks=made.marks,
    )
