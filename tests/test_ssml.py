"""SSML: documents compiled into sentences, rates, breaks and marks; keys; safe parsing; the routes;
and what Whisper hears of every say-as kind."""

from __future__ import annotations

import io
import json
import re
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

from .conftest import transcribe, unique
from .servers import Server
from .test_intelligibility import word_error_rate, words

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


@pytest.mark.slow
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
@pytest.mark.parametrize("voice", ["en-joe", "en-us-female"])
def test_whisper_hears_every_say_as_kind(server: Server, whisper_base: Any, voice: str) -> None:
    """Piper and eSpeak through Whisper base: each kind said as a support line says it. (tiny.en,
    on this long a run of digits, loops on "-0-0-0…" one take in eight, and hears eSpeak's digits
    as noise one in three; neither voice says a text the same way twice.)"""
    whisper = whisper_base
    document = (
        '<speak>Call <say-as interpret-as="telephone">400-820-8820</say-as>. '
        'Your order <say-as interpret-as="digits">4521</say-as> ships on '
        '<say-as interpret-as="date" format="md">12/03</say-as> at '
        '<say-as interpret-as="time">3:30pm</say-as>. '
        'The total is <say-as interpret-as="currency">19.99</say-as>. '
        'You are <say-as interpret-as="ordinal">3</say-as> in line of '
        '<say-as interpret-as="cardinal">250</say-as>. '
        # A word that could be read whole, so spelled letters are told from it.
        'To confirm, I will spell it: <say-as interpret-as="characters">CAT</say-as>. '
        # Whisper drops the last words of a take now and then: nothing checked comes last.
        "Thank you for calling.</speak>"
    )
    # Neither voice says a text the same way twice, and Whisper mishears a word of a long take now
    # and then ("call four" as "golf r", a spelled "A" lost): each kind must be heard in one of up
    # to three takes (each at a slightly other speed, so made anew), and none may say "thousand".
    missed: set[str] | None = None
    takes = []
    for speed in (1.0, 0.97, 1.03):  # a take of its own: no sentence of it is in the cache
        body = {"input": document, "voice": voice, "response_format": "wav", "speed": speed}
        with server.client() as client:
            answer = client.post("/v1/audio/speech", json=body)
        heard = transcribe(whisper, answer.content).lower()
        takes.append(heard)
        assert "thousand" not in heard, heard
        now = _missed(heard)
        missed = now if missed is None else missed & now
        if not missed:
            break
    assert not missed, (missed, takes)


def _missed(heard: str) -> set[str]:
    """The say-as kinds of the document not heard as intended in this take."""
    # Whisper writes numbers as digits or as words ("4-0-0", "four, zero, zero", "250", "two hundred
    # and fifty"): matched in words, and digits said one by one as runs of digits.
    said = _spelled(heard).lower()
    runs = _digit_runs(said)
    kinds = {
        "telephone, digit by digit": any("4008208820" in run for run in runs),
        "digits, one by one": any("4521" in run for run in runs),
        "date": re.search(r"december\W+(?:third|three)", said),
        "time": re.search(r"3\W*30\W*p\.?\s?m", heard) or re.search(r"three\W+thirty\W+p\W*m", said),
        # As money, not "ten ninety-nine"; the cents of eSpeak's are heard as "$19.00" now and then.
        "currency": re.search(r"nineteen dollars", said),
        "ordinal": re.search(r"\bthird in li\w+", said),  # "line", heard as "life" at times
        "cardinal": re.search(r"\btwo hundred and fifty\b", said),
        # Letter by letter, not the word "cat" (base hears eSpeak's "A" as "8" and "T" as "D" or,
        # in all three takes of one CI run, "B").
        "characters, spelled": re.search(r"\bc(?:\W+(?:a|8)\W*|\W*(?:a|8)\W+)[tdb]\b", heard),
    }
    return {kind for kind, found in kinds.items() if not found}


@pytest.mark.slow
def test_the_issue_reply_is_heard_right(tmp_path: Any, whisper: Any) -> None:
    """Plain text gets the same care: the reply that came back as "hash 4,521", "12-0,3", "$10.99"."""
    from .servers import start_server, stop_server

    server = start_server(tmp_path, env={"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": "1"})
    try:
        text = (
            "Please call 400-820-8820. Your order #4521 ships on 12/03 at 3:30 pm. "
            "The total is $19.99, or 20% off. Visit acme.com or email help@acme.com."
        )
        with server.client() as client:
            answer = client.post(
                "/v1/audio/speech", json={"input": text, "voice": "en-joe", "response_format": "wav"}
            )
        heard = transcribe(whisper, answer.content)
        expected = (
            "please call four zero zero eight two zero eight eight two zero your order number four five two "
            "one ships on december third at three thirty p m the total is nineteen dollars and ninety nine "
            "cents or twenty percent off visit acme dot com or email help at acme dot com"
        )
        # What came back wrong before is right: the order number, the date, the amount.
        assert "hash" not in heard.lower() and "December" in heard, heard
        assert any("4521" in run for run in _digit_runs(heard)), heard
        assert "$10.99" not in heard and "19.99" in heard, heard
        # Piper's noise cannot be seeded: about one take in five, tiny.en turns the long run of phone
        # digits into others ("400-800-888-800-800-") and mishears a word or two (0.27 then; 0.10
        # usually).
        assert word_error_rate(words(expected), words(_spelled(heard))) < 0.35, heard
    finally:
        stop_server(server)


_DIGIT_WORDS = (
    {
        word: str(digit)
        for digit, word in enumerate("zero one two three four five six seven eight nine".split())  # noqa: SIM905
    }
    | {"for": "4"}
    | dict.fromkeys(("nilo", "niro", "nero", "nelo"), "0")
)  # "four"; eSpeak's "zero" as heard


def _digit_runs(heard: str) -> list[str]:
    """The runs of digits in a transcript, whether Whisper wrote them as digits or words, whatever
    came between them."""
    runs, run = [], ""
    for token in re.findall(r"\d+|[a-z]+", heard.lower()):
        digit = token if token.isdigit() else _DIGIT_WORDS.get(token)
        if digit is None:
            runs.append(run)
            run = ""
        else:
            run += digit
    return [r for r in [*runs, run] if r]


def _spelled(heard: str) -> str:
    """Whisper writes digits; the reference is in words."""
    from ttsd.textnorm.en import normalize

    # Phone digits as Whisper groups them ("400-800-8820"): one by one, as the reference has them.
    grouped = re.sub(r"\d+(?:-\d*)+", lambda m: " ".join(ch for ch in m.group() if ch.isdigit()), heard)
    return normalize(grouped)
