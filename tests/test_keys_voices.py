from __future__ import annotations

import pytest

from ttsd.engines import REGISTRY, select
from ttsd.errors import ConfigError, UnknownFormat, UnknownLanguage, UnknownVoice
from ttsd.links import Links
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.voices import Catalogue

LINKS = Links(b"a secret for the tests")


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue(REGISTRY, "en-joe")


def job(catalogue: Catalogue, **kwargs: object) -> object:
    return prepare_job(SynthesisRequest(**kwargs), catalogue, LINKS, max_text_chars=5000)  # type: ignore[arg-type]


def test_key_ignores_format_and_whitespace_but_not_voice_or_speed(catalogue: Catalogue) -> None:
    a = prepare_job(SynthesisRequest("Hello  world.", format="mp3"), catalogue, LINKS, max_text_chars=100)
    b = prepare_job(SynthesisRequest(" Hello world. ", format="wav"), catalogue, LINKS, max_text_chars=100)
    assert a.key == b.key
    assert a.task_id != b.task_id
    c = prepare_job(SynthesisRequest("Hello world.", voice="en-heart"), catalogue, LINKS, max_text_chars=100)
    d = prepare_job(SynthesisRequest("Hello world.", speed=1.5), catalogue, LINKS, max_text_chars=100)
    e = prepare_job(SynthesisRequest("Hello world.", seed=7), catalogue, LINKS, max_text_chars=100)
    assert len({a.key, c.key, d.key, e.key}) == 4


def test_openai_alias_shares_the_voice_cache(catalogue: Catalogue) -> None:
    alias = prepare_job(SynthesisRequest("Hi there.", voice="nova"), catalogue, LINKS, max_text_chars=100)
    name = prepare_job(SynthesisRequest("Hi there.", voice="en-heart"), catalogue, LINKS, max_text_chars=100)
    assert alias.key == name.key


def test_language_is_part_of_the_key(catalogue: Catalogue) -> None:
    mandarin = prepare_job(SynthesisRequest("你好", language="zh"), catalogue, LINKS, max_text_chars=100)
    cantonese = prepare_job(SynthesisRequest("你好", language="yue"), catalogue, LINKS, max_text_chars=100)
    assert mandarin.spec.language == "cmn" and cantonese.spec.language == "yue"
    assert mandarin.key != cantonese.key


def test_errors_list_valid_values(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownVoice) as voice:
        prepare_job(SynthesisRequest("x1", voice="nobody"), catalogue, LINKS, max_text_chars=100)
    assert "en-joe" in voice.value.details["valid"]
    with pytest.raises(UnknownFormat):
        prepare_job(SynthesisRequest("x1", format="aac"), catalogue, LINKS, max_text_chars=100)
    with pytest.raises(UnknownLanguage):
        prepare_job(SynthesisRequest("x1", language="klingon"), catalogue, LINKS, max_text_chars=100)
    with pytest.raises(UnknownLanguage):
        prepare_job(
            SynthesisRequest("x1", voice="en-joe", language="yue"), catalogue, LINKS, max_text_chars=100
        )


def test_catalogue_covers_english_mandarin_cantonese(catalogue: Catalogue) -> None:
    listing = catalogue.listing()
    assert {"en-US", "cmn", "yue"} <= {v["language"] for v in listing}
    assert len(listing) >= 4
    assert set(catalogue.aliases) == {"alloy", "echo", "fable", "onyx", "nova", "shimmer"}


def test_aliases_fall_back_to_loaded_engines() -> None:
    only_espeak = Catalogue(select(["espeak"]), "en-us-female")
    assert only_espeak.aliases["nova"] == "en-us-female"
    with pytest.raises(ConfigError):
        Catalogue(select(["espeak"]), "en-joe")
    with pytest.raises(ConfigError):
        select(["nope"])
