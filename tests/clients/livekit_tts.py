"""LiveKit Agents' ElevenLabs TTS plugin, unmodified, pointed at ttsd: a reply pushed token by
token into a synthesis stream, flushed and ended as an agent's turn is; the audio frames counted.
Runs in the clients' own virtual environment; prints one JSON line of what it received."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from livekit.plugins import elevenlabs


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="ttsd's base URL, http://host:port")
    parser.add_argument("--voice", required=True)
    parser.add_argument("--key", default="unused")
    parser.add_argument("--encoding", default="pcm_16000")
    parser.add_argument("--text", required=True)
    args = parser.parse_args()

    async with aiohttp.ClientSession() as session:
        tts = elevenlabs.TTS(
            voice_id=args.voice,
            api_key=args.key,
            base_url=f"{args.url}/v1",
            http_session=session,
            encoding=args.encoding,
        )
        stream = tts.stream()
        started = time.perf_counter()

        async def feed() -> None:
            for token in args.text.split(" "):
                stream.push_text(token + " ")
                await asyncio.sleep(0.02)
            stream.flush()
            stream.end_input()

        feeding = asyncio.create_task(feed())
        samples, first, rates = 0, None, set()
        async for event in stream:
            if first is None:
                first = time.perf_counter() - started
            samples += event.frame.samples_per_channel
            rates.add(event.frame.sample_rate)
        await feeding
        await stream.aclose()
        await tts.aclose()
    print(json.dumps({"samples": samples, "first_audio": first, "rates": sorted(rates)}))


asyncio.run(main())
