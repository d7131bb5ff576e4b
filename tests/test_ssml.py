"""SSML: documents compiled into sentences, rates, breaks and marks; keys; safe parsing; the routes.
What Whisper hears of them: ``test_ssml_heard``."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from ttsd.config import Settings
from ttsd.engines.base import phoneme_span
from ttsd.errors import InvalidSsml, UnknownLexicon
from ttsd.jobs.pieces import piece_keys
from ttsd.links import Links
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.ssml import compile_ssml, is_ssml
from ttsd.voices import Catalogue

from .conftest import unique
from .servers import Server

LINKS = Links(b"a secret for the tests")
CATALOGUE = Catalogue.of(Settings(engines=("piper", "hibari", "espeak")))


def plan(document: str, language: str = "en-US") -> Any:
    return compile_ssml(
        document, language=language, alphabets=("ipa", "x-espeak"), speak_phonemes=phoneme_span
    )


def job(text: str, **fields: Any) -> Any:
    return prepare_job(SynthesisRequest(text, **fields), CATALOGUE, LINKS, max_text_chars=5000)


@pytest.mark.parametrize(
    ("markup", "said"),
    [
        (
            '<say-as interpret-as="telephone">400-820-8820</say-as>',
            "four, zero, zero; eight, two, zero; eight, eight, two, zero",
        ),
        ('<say-as interpret-as="digits">4521</say-as>', "four, five, two, one"),
        ('<say-as interpret-as="cardinal">4521</say-as>', "four thousand five hundred and twenty one"),
        ('<say-as interpret-as="number">1500</say-as>', "one thousand five hundred"),
        ('<say-as interpret-as="ordinal">3</say-as>', "third"),
        ('<say-as interpret-as="characters">ACME</say-as>', "A, C, M, E"),
        ('<say-as interpret-as="spell-out">B2</say-as>', "B, two"),
        ('<say-as interpret-as="currency">19.99</say-as>', "nineteen dollars and ninety nine cents"),
        ('<say-as interpret-as="currency">€5</say-as>', "five euros"),
        ('<say-as interpret-as="date" format="mdy">12/03/2026</say-as>', "December third, twenty twenty six"),
        ('<say-as interpret-as="date" format="dmy">03.12.2026</say-as>', "December third, twenty twenty six"),
        ('<say-as interpret-as="date" format="md">12/03</say-as>', "December third"),
        ('<say-as interpret-as="time">3:30pm</say-as>', "three thirty p m"),
        ('<sub alias="World Wide Web Consortium">W3C</sub>', "World Wide Web Consortium"),
    ],
)
def test_say_as_and_sub_become_the_words_said(markup: str, said: str) -> None:
    assert plan(f"<speak>It is {markup}.</speak>").sentences == (f"It is {said}.",)


@pytest.mark.parametrize(
    ("markup", "said"),
    [
        ('<say-as interpret-as="telephone">400-820-8820</say-as>', "四零零八二零八八二零"),
        ('<say-as interpret-as="digits">4521</say-as>', "四五二一"),
        ('<say-as interpret-as="cardinal">4521</say-as>', "四千五百二十一"),
        ('<say-as interpret-as="ordinal">3</say-as>', "第三"),
        ('<say-as interpret-as="currency">19.99</say-as>', "十九点九九元"),
        ('<say-as interpret-as="date" format="ymd">2026-12-03</say-as>', "二零二六年十二月三日"),
        ('<say-as interpret-as="time">9:05</say-as>', "九点零五分"),
    ],
)
def test_say_as_in_mandarin(markup: str, said: str) -> None:
    assert plan(f"<speak>是{markup}。</speak>", "cmn").sentences == (f"是{said}。",)


def test_breaks_paragraphs_rates_marks_and_other_elements() -> None:
    made = plan(
        '<speak><p>First one. Second one.</p><break time="700ms"/><mark name="m"/>'
        '<prosody rate="slow">Slow here.</prosody><s>Short</s><break strength="strong"/>'
        '<emphasis level="strong">Loud</emphasis> <phoneme alphabet="ipa" ph="təˈmeɪtoʊ">tomato</phoneme>.'
        '<lexicon name="acme"/><mark name="end"/><break time="2s"/></speak>'
    )
    assert made.sentences == (
        "First one.",
        "Second one.",
        "Slow here.",
        "Short",
        f"Loud {phoneme_span('ipa', 'təˈmeɪtoʊ')}.",
    )
    assert made.rates == (1.0, 1.0, 0.8, 1.0, 1.0)
    # A paragraph's end (0.4 s) and a break (0.7 s) add up before what follows them.
    assert made.pauses == (None, None, pytest.approx(1.1), None, 0.75)
    assert made.tail == 2.0
    assert made.marks == (("m", 2, pytest.approx(1.1)), ("end", 5, 0.0))
    assert made.lexicons == ("acme",) and made.ignored == ("emphasis",)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<speak>unclosed <break", "line 1, column 17"),
        ("<speak>\n<a>\n</b></speak>", "line 3, column 3"),
        ("<p>not speak</p>", "root element is <speak>"),
        (  # "billion laughs", in small
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            "<speak>&lol2;</speak>",
            "DTD",
        ),
        ('<!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><speak>&x;</speak>', "DTD"),
        ('<!DOCTYPE speak SYSTEM "http://example.com/x.dtd"><speak>x</speak>', "DTD"),
        ("<speak>" + "<s>" * 40 + "deep" + "</s>" * 40 + "</speak>", "nested deeper"),
        ("<speak>" + '<break time="1ms"/>' * 2100 + "x</speak>", "elements"),
        ("<speak>" + "a" * 70_000 + "</speak>", "the limit is"),
        ('<speak><break time="forever"/>x</speak>', "give it in s or ms"),
        ('<speak><prosody rate="warp">x</prosody></speak>', "percentage"),
        ('<speak><phoneme alphabet="x-amazon-pinyin" ph="ni3">x</phoneme></speak>', "reads"),
        ("<speak><break/></speak>", "says nothing"),
    ],
)
def test_bad_and_hostile_documents_are_refused(document: str, message: str) -> None:
    with pytest.raises(InvalidSsml, match=message):
        plan(document)


def test_ssml_is_recognised_or_chosen() -> None:
    assert is_ssml("<speak>Hi.</speak>") and is_ssml('  <?xml version="1.0"?><speak>Hi.</speak>')
    assert not is_ssml("I <3 speak") and not is_ssml("Hello <speak> there")
    literal = job("<speak>Hi.</speak>", text_type="text")
    assert literal.layout is None and "speak" in literal.sentences[0]


def test_keys_cover_what_changes_the_samples_and_nothing_else() -> None:
    digits = job('<speak>Your order <say-as interpret-as="digits">4521</say-as> has shipped.</speak>')
    typed = job("<speak>Your order four, five, two, one has shipped.</speak>")
    # Two documents, one sentence: said as digits or typed out, the same piece.
    assert piece_keys(digits.spec, digits.sentences, digits.speeds) == piece_keys(
        typed.spec, typed.sentences, typed.speeds
    )
    plain = job("Your order four, five, two, one has shipped.")
    assert piece_keys(plain.spec, plain.sentences) == piece_keys(typed.spec, typed.sentences, typed.speeds)
    # A mark changes nothing that is heard: the same key. A break or a rate does.
    marked = job('<speak>Your order four, five, two, one <mark name="x"/>has shipped.</speak>')
    assert job("<speak>Hi. Bye.</speak>").key == job('<speak>Hi. <mark name="x"/>Bye.</speak>').key
    assert job("<speak>Hi. Bye.</speak>").key != job('<speak>Hi. <break time="1s"/>Bye.</speak>').key
    slow = job('<speak><prosody rate="slow">Hi.</prosody></speak>')
    assert slow.speeds == (0.8,) and slow.key != job("<speak>Hi.</speak>").key
    assert marked.sentences != typed.sentences  # a mark ends a sentence, so its offset is exact
    with pytest.raises(UnknownLexicon):
        job('<speak><lexicon name="nobody"/>Hi.</speak>')


def _finished(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as client:
        answer = client.post("/v1/synthesize", json=body)
    assert answer.status_code in (200, 202), answer.text
    first = answer.json()
    return first if answer.status_code == 200 else {**server.wait_task(first["task_id"]), "first": first}


def test_ssml_through_the_routes(server: Server) -> None:
    reference = unique("Thanks.")
    document = (
        f'<speak>{reference}<break time="1500ms"/><mark name="order"/>'
        '<emphasis>Your order</emphasis> <say-as interpret-as="digits">4521</say-as> has shipped.</speak>'
    )
    done = _finished(server, {"text": document, "voice": "en-heart", "format": "wav"})
    assert done["status"] == "done" and done["first"]["ssml_ignored"] == ["emphasis"]
    [mark] = done["marks"]
    data = httpx.get(done["url"], follow_redirects=True, timeout=30).content
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    at = int(mark["seconds"] * rate)
    # The mark is after the break: 1.5 s of silence end right where it is.
    assert mark["name"] == "order" and np.abs(samples[at - int(1.4 * rate) : at - 200]).max() == 0
    assert np.abs(samples[at : at + rate // 2]).max() > 0
    # A hit reports them as the job did; so does another format of the document.
    again = _finished(server, {"text": document, "voice": "en-heart", "format": "wav"})
    assert again["status"] == "done" and again["marks"] == [mark] and again["ssml_ignored"] == ["emphasis"]
    assert _finished(server, {"text": document, "voice": "en-heart", "format": "mp3"})["marks"] == [mark]
    # The same document streamed, and over the socket: the same audio, and the same report.
    with server.client() as client:
        speech = client.post(
            "/v1/audio/speech", json={"input": document, "voice": "en-heart", "response_format": "wav"}
        )
    assert speech.headers["x-ssml-ignored"] == "emphasis"
    from websockets.sync.client import connect

    with connect(server.url.replace("http://", "ws://") + "/v1/stream", open_timeout=30) as ws:
        ws.send(json.dumps({"text": document, "voice": "en-heart"}))
        while isinstance(message := ws.recv(timeout=60), bytes):
            pass
    assert json.loads(message)["ssml_ignored"] == ["emphasis"]
    with server.client() as client:
        bad = client.post("/v1/synthesize", json={"text": "<speak>oops <b></speak>"})
    assert bad.status_code == 422 and bad.json()["error"]["details"] == {"line": 1, "column": 18}
