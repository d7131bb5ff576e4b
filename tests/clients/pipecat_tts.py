"""Pipecat's ElevenLabsTTSService, unmodified, pointed at ttsd: an LLM reply goes in token by token
(as Pipecat's LLM services emit it), audio frames come out; with --interrupt, the caller talks over
the bot after its first audio (an InterruptionFrame, as Pipecat's turn detection sends). Runs in
the clients' own virtual environment; prints one JSON line of what it received."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from pipecat.frames.frames import (
    EndFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import WorkerRunner
from pipecat.pipeline.task import PipelineParams
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService


class Collect(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.samples = 0
        self.first: float | None = None
        self.started = time.perf_counter()
        self.stopped = 0
        self.heard = asyncio.Event()
        self.final = asyncio.Event()
        self.after_interrupt = 0
        self.interrupted = False

    async def process_frame(self, frame, direction: FrameDirection) -> None:  # type: ignore[no-untyped-def]
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            if self.first is None:
                self.first = time.perf_counter() - self.started
            self.samples += len(frame.audio) // 2
            if self.interrupted:
                self.after_interrupt += len(frame.audio) // 2
            self.heard.set()
        elif isinstance(frame, TTSStoppedFrame):
            self.stopped += 1
            self.final.set()
        await self.push_frame(frame, direction)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--key", default="unused")
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--text", required=True)
    parser.add_argument("--interrupt", action="store_true")
    parser.add_argument("--token-delay", type=float, default=0.02)
    args = parser.parse_args()

    tts = ElevenLabsTTSService(
        api_key=args.key,
        url=args.url,
        sample_rate=args.rate,
        settings=ElevenLabsTTSService.Settings(voice=args.voice),
    )
    collect = Collect()
    worker = PipelineWorker(Pipeline([tts, collect]), params=PipelineParams(audio_out_sample_rate=args.rate))

    async def reply() -> None:
        await worker.queue_frame(LLMFullResponseStartFrame())
        for token in args.text.split(" "):
            await worker.queue_frame(LLMTextFrame(token + " "))
            await asyncio.sleep(args.token_delay)
        await worker.queue_frame(LLMFullResponseEndFrame())

    async def feed() -> None:
        await asyncio.sleep(0.5)
        collect.started = time.perf_counter()
        writing = asyncio.create_task(reply())
        if args.interrupt:
            # The caller talks over the bot while the LLM is still writing its reply.
            await asyncio.wait_for(collect.heard.wait(), 30)
            writing.cancel()
            collect.interrupted = True
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(3)
        else:
            await writing
            await asyncio.wait_for(collect.final.wait(), 60)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    feeding = asyncio.create_task(feed())
    await runner.run()
    await feeding
    print(
        json.dumps(
            {
                "samples": collect.samples,
                "seconds": collect.samples / args.rate,
                "first_audio": collect.first,
                "stopped": collect.stopped,
                "after_interrupt": collect.after_interrupt,
            }
        )
    )


asyncio.run(main())
