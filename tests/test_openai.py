"""The official OpenAI Python client, unmodified, against /v1/audio/speech."""

from __future__ import annotations

import io

import openai
import pytest
import soundfile

from .conftest import unique
from .servers import Server


@pytest.fixture
def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("fmt", ["mp3", "wav", "opus", "flac"])
def test_speech_with_openai_client(openai_client: openai.OpenAI, fmt: str) -> None:
    response = openai_client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=unique("Hello from the OpenAI client."),
        response_format=fmt,  # type: ignore[arg-type]
    )
    samples, rate = soundfile.read(io.BytesIO(response.content))
    assert len(samples) / rate > 1.0


def test_speech_pcm_and_repeat_is_a_cache_hit(server: Server, openai_client: openai.OpenAI) -> None:
    text = unique("Repeat after me.")
    first = openai_client.audio.speech.create(model="tts-1", voice="onyx", input=text, response_format="pcm")
    hits = server.metric("ttsd_cache_requests_total", result="hit")
    second = openai_client.audio.speech.create(model="tts-1", voice="onyx", input=text, response_format="pcm")
    assert first.content == second.content and len(first.content) > 22050
    assert server.metric("ttsd_cache_requests_total", result="hit") - hits == 1


def test_openai_errors_are_json(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        openai_client.audio.speech.create(model="tts-1", voice="nobody", input="hi")  # type: ignore[arg-type]
    assert info.value.status_code == 422
