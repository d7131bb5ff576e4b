"""Pronunciation lexicons: PLS files read and refused with their line, matching, precedence,
languages, keys, and what the engines make of them (eSpeak's own phoneme trace, real audio)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ttsd.config import Settings
from ttsd.engines import REGISTRY, select
from ttsd.engines.base import Phonemes, phoneme_span, segments
from ttsd.errors import ConfigError, InvalidRequest, UnknownLexicon, UnsupportedLexicon
from ttsd.jobs.model import Job
from ttsd.jobs.pieces import piece_keys
from ttsd.links import Links
from ttsd.pls import LexiconError
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.voices import Catalogue

from .conftest import Server, base_env, finished, start_server, stop_server, transcribe

LINKS = Links(b"a secret for the tests")
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
NS = 'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"'


def pls(language: str, body: str, alphabet: str = "x-espeak") -> str:
    opening = f'<lexicon version="1.0" {NS} alphabet="{alphabet}" xml:lang="{language}">'
    return f"{HEAD}{opening}\n{body}\n</lexicon>\n"  # the body starts on line 3


def lexeme(grapheme: str, *, alias: str | None = None, phoneme: str | None = None) -> str:
    said = f"<alias>{alias}</alias>" if alias is not None else f"<phoneme>{phoneme}</phoneme>"
    return f"  <lexeme><grapheme>{grapheme}</grapheme>{said}</lexeme>"


ACME = pls(
    "en-US",
    "\n".join(
        [
            "  <!-- brands -->",
            lexeme("TTSD", alias="text to speech daemon"),
            lexeme("ACME", phoneme="s'u:p3m'A@k@t"),
            lexeme("New York", alias="the big apple"),
            lexeme("New York City", alias="gotham"),
        ]
    ),
)
POLYPHONES = pls(
    "zh-CN", lexeme("便宜", phoneme="phiE35nji5") + "\n" + lexeme("还钱", phoneme="xwan35tS;hiE35n")
)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return directory


def catalogue(
    directory: Path | None, *, defaults: str = "", engines: str = "piper,hibari,espeak"
) -> Catalogue:
    settings = Settings(engines=engines, lexicon_dir=directory, default_lexicons=defaults)
    return Catalogue.of(settings)


def job(cat: Catalogue, text: str, **kwargs: object) -> Job:
    return prepare_job(SynthesisRequest(text, **kwargs), cat, LINKS, max_text_chars=5000)  # type: ignore[arg-type]


@pytest.fixture
def lexicons(tmp_path: Path) -> Catalogue:
    return catalogue(write(tmp_path / "lex", {"acme.pls": ACME, "zh-polyphones.pls": POLYPHONES}))


# -- reading PLS -------------------------------------------------------------------------------


def test_listing_names_language_entries_and_hash(lexicons: Catalogue) -> None:
    listing = {lx["name"]: lx for lx in lexicons.lexicons.listing()}
    assert set(listing) == {"acme", "zh-polyphones"}
    acme = listing["acme"]
    assert (acme["language"], acme["entries"], acme["alphabets"]) == ("en-US", 4, ["x-espeak"])
    assert len(acme["hash"]) == 16 and acme["default"] is False
    # hibari reads no phonemes: the acme lexicon has a phoneme-only lexeme it cannot say
    assert acme["engines"] == ["espeak", "piper"] and "hibari" in acme["unsupported"]
    assert listing["zh-polyphones"]["language"] == "cmn"  # xml:lang zh-CN is the catalogue's cmn


def test_the_hash_follows_the_content_not_the_layout(tmp_path: Path) -> None:
    def digest(content: str, stem: str = "acme") -> str:
        directory = write(tmp_path / f"d{abs(hash(content + stem))}", {f"{stem}.pls": content})
        return str(catalogue(directory).lexicons.listing()[0]["hash"])

    base = digest(ACME)
    assert digest(ACME.replace("<!-- brands -->", "<!-- our brands, edited -->\n\n")) == base
    assert digest(ACME, stem="renamed") == base
    assert digest(ACME.replace("gotham", "Gotham")) != base
    assert digest(ACME.replace('xml:lang="en-US"', 'xml:lang="en"')) != base  # same language, other text


def test_prefer_and_per_phoneme_alphabet(tmp_path: Path) -> None:
    content = pls(
        "en-US",
        "<lexeme><grapheme>Xfinity</grapheme><grapheme>XFINITY</grapheme><alias>ex finity</alias>"
        '<phoneme alphabet="ipa" prefer="true">ˈɛksfɪnɪti</phoneme></lexeme>',
    )
    cat = catalogue(write(tmp_path / "lex", {"x.pls": content}))
    # Piper reads IPA: the preferred pronunciation. hibari reads no phonemes: the alias.
    assert job(cat, "Xfinity and XFINITY.", voice="en-joe", lexicons=("x",)).sentences == (
        f"{phoneme_span('ipa', 'ˈɛksfɪnɪti')} and {phoneme_span('ipa', 'ˈɛksfɪnɪti')}.",
    )
    assert job(cat, "Xfinity.", voice="en-heart", lexicons=("x",)).sentences == ("ex finity.",)
    # eSpeak reads its own mnemonics, not IPA: the alias.
    assert job(cat, "Xfinity.", voice="en-us-female", lexicons=("x",)).sentences == ("ex finity.",)


BAD = {
    "not well-formed": (
        pls("en-US", "<lexeme><grapheme>A</grapheme>\n<alias>b</lexeme>"),
        4,
        "not well-formed",
    ),
    "no language": (f'{HEAD}<lexicon {NS} alphabet="ipa">\n</lexicon>', 2, "xml:lang"),
    "no grapheme": (pls("en-US", "<lexeme>\n<alias>b</alias></lexeme>"), 3, "has no <grapheme>"),
    "no pronunciation": (
        pls("en-US", "\n\n<lexeme><grapheme>A</grapheme></lexeme>"),
        5,
        "no <alias> or <phoneme>",
    ),
    "empty phoneme": (
        pls("en-US", "<lexeme><grapheme>A</grapheme><phoneme> </phoneme></lexeme>"),
        3,
        "empty",
    ),
    "unknown element": (
        pls("en-US", "<lexeme><grapheme>A</grapheme><sound>b</sound></lexeme>"),
        3,
        "<sound>",
    ),
    "unknown alphabet": (
        pls("en-US", "\n<lexeme><grapheme>A</grapheme><phoneme>eI</phoneme></lexeme>", alphabet="x-sampa"),
        4,
        "no engine reads the phoneme alphabet 'x-sampa'",
    ),
    "no alphabet": (
        f'{HEAD}<lexicon {NS} xml:lang="en-US">\n<lexeme><grapheme>A</grapheme><phoneme>eI</phoneme></lexeme>'
        "</lexicon>",
        3,
        "without an alphabet",
    ),
    "entity": (
        '<?xml version="1.0"?>\n<!DOCTYPE lexicon [<!ENTITY a "aaaaaaaaaa">]>\n'
        f'<lexicon {NS} alphabet="ipa" xml:lang="en-US"></lexicon>',
        2,
        "DOCTYPE is not allowed",
    ),
    "other root": (f'{HEAD}<lexicon xmlns="urn:other" xml:lang="en"/>', 2, "not in the PLS namespace"),
    "bad prefer": (
        pls("en-US", '<lexeme><grapheme>A</grapheme><alias prefer="yes">b</alias></lexeme>'),
        3,
        "prefer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_is_refused_with_its_file_and_line(tmp_path: Path, case: str) -> None:
    content, line, words = BAD[case]
    directory = write(tmp_path / "lex", {"broken.pls": content})
    with pytest.raises(LexiconError) as error:
        catalogue(directory)
    assert f"{directory / 'broken.pls'}, line {line}:" in error.value.message, error.value.message
    assert words in error.value.message


def test_names_and_directories_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        catalogue(tmp_path / "missing")
    with pytest.raises(ConfigError, match="its name 'two words'"):
        catalogue(write(tmp_path / "a", {"two words.pls": ACME}))
    with pytest.raises(ConfigError, match="has the same name"):
        catalogue(write(tmp_path / "b", {"acme.pls": ACME, "acme.xml": ACME}))
    with pytest.raises(ConfigError, match="TTSD_LEXICON_DIR is not"):
        catalogue(None, defaults="acme")
    with pytest.raises(ConfigError, match=r"names 'nope'.*holds: acme"):
        catalogue(write(tmp_path / "c", {"acme.pls": ACME}), defaults="nope")
    # Other files in the directory (a README) are not lexicons.
    (tmp_path / "c" / "README.md").write_text("# our lexicons")
    assert catalogue(tmp_path / "c").lexicons.names == ["acme"]


def test_a_default_every_engine_of_its_language_cannot_say_is_refused_at_start(tmp_path: Path) -> None:
    directory = write(tmp_path / "lex", {"acme.pls": ACME})
    with pytest.raises(ConfigError) as error:
        catalogue(directory, defaults="acme")  # hibari speaks en-US and reads no phonemes
    assert "'ACME' (line 5)" in error.value.message and "hibari takes aliases only" in error.value.message
    assert catalogue(directory, defaults="acme", engines="piper,espeak").lexicons.defaults == ("acme",)


# -- matching ----------------------------------------------------------------------------------


def said(cat: Catalogue, text: str, **kwargs: object) -> str:
    return " ".join(job(cat, text, **kwargs).sentences)


def test_whole_words_case_sensitive_longest_first(lexicons: Catalogue) -> None:
    acme = phoneme_span("x-espeak", "s'u:p3m'A@k@t")
    assert said(lexicons, "ACME, ACMEs, Acme, ACME-like and (ACME).", lexicons=("acme",)) == (
        f"{acme}, ACMEs, Acme, {acme}-like and ({acme})."
    )
    assert said(lexicons, "New York City is not New York. New Yorker.", lexicons=("acme",)) == (
        "gotham is not the big apple. New Yorker."
    )
    assert (
        said(lexicons, "TTSD2 and xTTSD but TTSD.", lexicons=("acme",))
        == "TTSD2 and xTTSD but text to speech daemon."
    )


def test_chinese_matches_the_longest_grapheme_without_word_breaks(tmp_path: Path) -> None:
    content = pls(
        "cmn",
        "\n".join(
            [
                lexeme("银行", alias="A"),
                lexeme("银行卡", alias="B"),
                lexeme("行", alias="C"),
                lexeme("ACME", alias="D"),
            ]
        ),
    )
    cat = catalogue(write(tmp_path / "lex", {"zh.pls": content}))
    made = job(cat, "我的银行卡在银行，行吗？ACME银行。", language="cmn", lexicons=("zh",))
    assert made.sentences == ("我的B在A，C吗？", "DA。")


def test_precedence_languages_and_defaults(tmp_path: Path) -> None:
    first = pls("en-US", lexeme("ACME", alias="first") + "\n" + lexeme("ACME Corp", alias="the corporation"))
    second = pls("en", lexeme("ACME", alias="second") + "\n" + lexeme("Globex", alias="glow bex"))
    directory = write(tmp_path / "lex", {"first.pls": first, "second.pls": second, "zh.pls": POLYPHONES})
    cat = catalogue(directory, defaults="second")
    assert said(cat, "ACME and Globex.", lexicons=("first",)) == "first and glow bex."
    assert said(cat, "ACME and Globex.") == "second and glow bex."  # the default alone
    assert said(cat, "ACME Corp.", lexicons=("first",)) == "the corporation."  # longest across lexicons
    # A lexicon of another language is skipped, not refused: a client may send all it has.
    english = job(cat, "ACME.", lexicons=("zh",))
    assert english.sentences == ("second.",)
    assert english.spec.lexicons == job(cat, "ACME.").spec.lexicons
    chinese = job(cat, "便宜。", language="cmn", lexicons=("first", "zh"))
    assert chinese.sentences == (f"{phoneme_span('x-espeak', 'phiE35nji5')}。",)


def test_request_errors(lexicons: Catalogue, tmp_path: Path) -> None:
    with pytest.raises(UnknownLexicon) as unknown:
        job(lexicons, "Hi.", lexicons=("nope",))
    assert unknown.value.details == {"valid": ["acme", "zh-polyphones"]}
    with pytest.raises(UnsupportedLexicon, match=r"'ACME' \(line 5\).*hibari takes aliases only"):
        job(lexicons, "Hi.", voice="en-heart", lexicons=("acme",))
    with pytest.raises(InvalidRequest, match="at most 16"):
        job(lexicons, "Hi.", lexicons=("acme",) * 17)
    with pytest.raises(UnknownLexicon, match="none"):
        job(catalogue(None), "Hi.", lexicons=("acme",))


# -- keys --------------------------------------------------------------------------------------


def test_key_carries_the_lexicons_and_pieces_carry_what_is_said(tmp_path: Path) -> None:
    plain_cat = catalogue(None)
    directory = write(tmp_path / "lex", {"acme.pls": ACME})
    text = "Welcome to TTSD. Your order has shipped."
    plain = job(plain_cat, text)
    # Without lexicons (scope, normalisation) the key is the one made before they existed.
    legacy = {
        k: v for k, v in dataclasses.asdict(plain.spec).items() if k not in ("lexicons", "scope", "norm")
    }
    canonical = json.dumps(legacy, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert plain.key == hashlib.sha256(canonical.encode()).hexdigest()

    before = job(catalogue(directory), text, lexicons=("acme",))
    assert before.key != plain.key
    assert job(catalogue(directory), text, lexicons=("acme",)).key == before.key  # unchanged: same key
    (directory / "acme.pls").write_text(ACME.replace("<!-- brands -->", "<!-- reformatted -->"))
    assert job(catalogue(directory), text, lexicons=("acme",)).key == before.key  # a comment: same key
    (directory / "acme.pls").write_text(ACME.replace("text to speech daemon", "T T S daemon"))
    after = job(catalogue(directory), text, lexicons=("acme",))
    assert after.key != before.key  # edited: a new key, never the old audio

    # A sentence is keyed by what the engine says: the one the lexicon leaves alone keeps its key
    # (it is reused from the cache), the one it changes gets a new one.
    plain_pieces = piece_keys(plain.spec, plain.sentences)
    before_pieces = piece_keys(before.spec, before.sentences)
    after_pieces = piece_keys(after.spec, after.sentences)
    assert before_pieces[1] == plain_pieces[1] == after_pieces[1]
    assert len({plain_pieces[0], before_pieces[0], after_pieces[0]}) == 3


def test_the_spoken_sentences_travel_with_the_job(lexicons: Catalogue) -> None:
    made = job(lexicons, "TTSD. Plain.", lexicons=("acme",))
    assert made.sentences == ("text to speech daemon.", "Plain.")
    again = Job.from_dict(json.loads(json.dumps(made.to_dict())))
    assert again.spoken == made.sentences and again.rewrite is None  # a worker has no lexicons
    assert again == made and again.sentences == made.sentences and again.key == made.key
    assert "spoken" not in job(lexicons, "Plain.").to_dict()  # no lexicon: nothing to carry


# -- engines -----------------------------------------------------------------------------------


def test_spans_cannot_come_from_a_request(lexicons: Catalogue) -> None:
    assert segments(f"a {phoneme_span('ipa', 'bi')} c") == ["a ", Phonemes("ipa", "bi"), " c"]
    forged = job(lexicons, "a \x02ipa\x1fbi\x03 c")
    assert segments(forged.sentences[0]) == [forged.sentences[0]]  # control characters are dropped


def test_espeak_says_a_mandarin_polyphone_only_in_its_word(lexicons: Catalogue) -> None:
    """便 is biàn in 方便 and pián in 便宜; eSpeak reads both biàn. The lexicon's 便宜 changes what
    eSpeak says for that word, and nothing else in the sentence (its own phoneme trace)."""
    from ttsd.engines.espeak import runtime

    text = "这个很方便，也很便宜。"
    without = runtime().phonemes(job(catalogue(None), text, language="cmn").sentences[0], "cmn", ipa=False)
    spoken = job(lexicons, text, language="cmn", lexicons=("zh-polyphones",)).sentences[0]
    with_lexicon = runtime().phonemes(spoken, "cmn", ipa=False)
    assert "f'A55N_| p'iE51n_|" in without and "f'A55N_| p'iE51n_|" in with_lexicon  # 方便 stays biàn
    assert "piE51nj'i35" in without and "piE51nj'i35" not in with_lexicon
    assert "phiE35nji5" in with_lexicon  # 便宜: pián yi
    assert without.replace("piE51nj'i35", "phiE35nji5") == with_lexicon


def spectral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean log-magnitude difference of two signals' frames: eSpeak varies a little from run to
    run, so a change is judged against that variation."""

    def frames(pcm: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(pcm, 512)[::256] * np.hanning(512)
        return np.log(np.abs(np.fft.rfft(windows)) + 1.0)

    fa, fb = frames(a), frames(b)
    n = min(len(fa), len(fb))
    return float(np.mean(np.abs(fa[:n] - fb[:n])))


def test_phoneme_entries_change_espeak_audio(lexicons: Catalogue) -> None:
    spec = REGISTRY["espeak"]
    engine = spec.load(threads=1)

    def speak(voice: str, text: str, **kwargs: object) -> np.ndarray:
        made = job(lexicons, text, voice=voice, **kwargs)
        return engine.synthesize(made.sentences[0], made.spec.voice_ref, speed=1.0, seed=None)

    # English: ACME said as the phonemes of "supermarket".
    plain = speak("en-us-female", "ACME is open.")
    lexical = speak("en-us-female", "ACME is open.", lexicons=("acme",))
    reference = speak("en-us-female", "supermarket is open.")
    assert abs(len(lexical) - len(reference)) < 0.03 * len(reference)
    assert len(lexical) > 1.15 * len(plain)
    # Mandarin: 便宜 as pián yi. The same length, another sound: judged against the run-to-run noise.
    runs = [speak("zh-female", "这个很便宜。") for _ in range(2)]
    changed = speak("zh-female", "这个很便宜。", lexicons=("zh-polyphones",))
    assert spectral_distance(runs[0], changed) > 1.6 * spectral_distance(runs[0], runs[1])
    # 方便 (the same 便 in another word) reaches the engine unchanged: the same input, the same voice.
    same = job(lexicons, "这个很方便。", voice="zh-female", lexicons=("zh-polyphones",))
    assert same.sentences == job(lexicons, "这个很方便。", voice="zh-female").sentences == ("这个很方便。",)


@pytest.mark.parametrize("name", ["piper", "kokoro"])
def test_ipa_engines_read_espeak_phonemes(tmp_path: Path, name: str) -> None:
    """Piper and Kokoro speak IPA: eSpeak turns the lexicon's mnemonics into it. The entry gives
    ACME the phonemes eSpeak reads for a whole phrase, so what is said is far longer than "ACME"
    and as long as the phrase (Piper's durations vary by up to a tenth from run to run)."""
    from ttsd.engines.espeak import runtime

    phrase = "the international supermarket company"
    mnemonics = runtime().phonemes(phrase, "en-us", ipa=False)
    content = pls("en-US", lexeme("ACME", phoneme=mnemonics))
    spec = select([name])[name]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.language == "en-US")
    cat = catalogue(write(tmp_path / "lex", {"acme.pls": content}), engines=name)
    made = job(cat, "ACME is open.", voice=voice.name, lexicons=("acme",))
    assert segments(made.sentences[0])[0] == Phonemes("x-espeak", mnemonics)

    def seconds(text: str) -> float:
        runs = [engine.synthesize(text, voice, speed=1.0, seed=1) for _ in range(3)]
        return float(np.mean([len(pcm) for pcm in runs])) / engine.sample_rate

    lexical, reference, plain = (
        seconds(made.sentences[0]),
        seconds(f"{phrase} is open."),
        seconds("ACME is open."),
    )
    assert abs(lexical - reference) < 0.15 * reference, (lexical, reference)
    assert lexical > 1.5 * plain, (lexical, plain)


# -- the service -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("lexicons")
    directory = write(tmp / "lexicons", {"acme.pls": ACME, "zh-polyphones.pls": POLYPHONES})
    env = {
        "TTSD_LEXICON_DIR": str(directory),
        "TTSD_DEFAULT_LEXICONS": "zh-polyphones",
        "TTSD_ENGINES": "piper,espeak",
        "TTSD_ENGINE_SLOTS": "1",
    }
    srv = start_server(tmp, env=env)
    yield srv
    stop_server(srv)


@pytest.mark.slow
def test_an_alias_changes_what_whisper_hears(served: Server, whisper: Any, artifacts: Path) -> None:
    heard: dict[str, list[str]] = {}
    with served.client() as client:
        for lexicons in ([], ["acme"]):
            body = {
                "input": "Welcome to TTSD.",
                "voice": "en-joe",
                "response_format": "wav",
                "lexicons": lexicons,
            }
            response = client.post("/v1/audio/speech", json=body)
            assert response.status_code == 200, response.text
            name = "+".join(lexicons) or "none"
            (artifacts / f"lexicon-{name}.wav").write_bytes(response.content)
            # Whisper writes the phrase with or without hyphens, take to take, and Piper's noise (not
            # seedable) now and then makes its unstressed "to" a schwa it writes "a".
            heard[name] = re.findall(r"[a-z]+", transcribe(whisper, response.content).lower())
    assert "speech" not in heard["none"], heard
    assert {"text", "speech"} <= set(heard["acme"]), heard


@pytest.mark.slow
def test_routes_list_apply_and_refuse_lexicons(served: Server) -> None:
    with served.client() as client:
        listing = client.get("/v1/lexicons").json()
        names = {lx["name"]: lx for lx in listing["lexicons"]}
        assert set(names) == {"acme", "zh-polyphones"}
        assert names["zh-polyphones"]["default"] and names["zh-polyphones"]["engines"] == ["espeak"]
        assert listing["alphabets"] == {"piper": ["x-espeak", "ipa"], "espeak": ["x-espeak"]}

        for path, body in (
            ("/v1/synthesize", {"text": "Hello.", "lexicons": ["nope"]}),
            ("/v1/audio/speech", {"input": "Hello.", "lexicons": ["nope"]}),
        ):
            refused = client.post(path, json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "unknown_lexicon"
            assert refused.json()["error"]["details"]["valid"] == ["acme", "zh-polyphones"]

        # The default applies to Mandarin requests by itself; naming it changes nothing.
        implicit = client.post("/v1/synthesize", json={"text": "便宜。", "language": "cmn", "format": "mp3"})
        named = client.post(
            "/v1/synthesize",
            json={"text": "便宜。", "language": "cmn", "format": "mp3", "lexicons": ["zh-polyphones"]},
        )
        assert implicit.json()["key"] == named.json()["key"]
        finished(served, implicit)

    from websockets.sync.client import connect

    with connect(served.url.replace("http", "ws") + "/v1/stream") as ws:
        ws.send(json.dumps({"text": "Hello.", "lexicons": ["nope"]}))
        event = json.loads(ws.recv())
        assert event["event"] == "error" and event["error"]["code"] == "unknown_lexicon"
        ws.send(json.dumps({"text": "TTSD.", "voice": "en-us-male", "lexicons": ["acme"]}))
        audio = b""
        while isinstance(message := ws.recv(), bytes):
            audio += message
        assert json.loads(message)["event"] == "done" and len(audio) > 22050  # "text to speech daemon"
    assert not served.failures_logged()


@pytest.mark.slow
def test_an_edited_lexicon_misses_only_what_it_changes(tmp_path: Path) -> None:
    """Restarts on one data directory: an unchanged lexicon (even reformatted) keeps its hits; an
    edited one gets new keys, and the sentences it does not touch come from the cache."""
    directory = write(tmp_path / "lexicons", {"acme.pls": ACME})
    env = {"TTSD_LEXICON_DIR": str(directory), "TTSD_ENGINES": "espeak", "TTSD_ENGINE_SLOTS": "1"}
    body = {"text": "Welcome to TTSD. Your order has shipped.", "voice": "en-us-female", "lexicons": ["acme"]}

    def run(edit: Callable[[str], str]) -> tuple[httpx.Response, bytes]:
        (directory / "acme.pls").write_text(edit(ACME))
        srv = start_server(tmp_path, env=env)
        try:
            with srv.client() as client:
                answer = client.post("/v1/synthesize", json=body)
                done = finished(srv, answer)
                return answer, client.get(done["url"]).content
        finally:
            stop_server(srv)

    first, first_audio = run(lambda text: text)
    assert first.status_code == 202 and first.json()["sentences_reused"] == 0
    again, again_audio = run(lambda text: text.replace("<!-- brands -->", "<!-- our brands -->\n"))
    assert again.status_code == 200 and again.json()["key"] == first.json()["key"]
    assert again_audio == first_audio
    edited, edited_audio = run(lambda text: text.replace("text to speech daemon", "talking daemon"))
    assert edited.json()["key"] != first.json()["key"]
    assert edited.status_code == 202 and edited.json()["sentences_reused"] == 1  # "Your order has shipped."
    assert edited_audio != first_audio


@pytest.mark.slow
def test_serve_refuses_a_broken_lexicon_at_start(tmp_path: Path) -> None:
    directory = write(tmp_path / "lexicons", {"acme.pls": ACME, "broken.pls": BAD["no grapheme"][0]})
    env = {**base_env(tmp_path), "TTSD_LEXICON_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"lexicon {directory / 'broken.pls'}, line 3: <lexeme> has no <grapheme>" in result.stderr
    assert "Traceback" not in result.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", "lexicons", "--dir", str(directory)],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 2 and "broken.pls, line 3" in listed.stderr
    (directory / "broken.pls").unlink()
    listed = subprocess.run(
        [sys.executable, "-m", "ttsd.cli", "lexicons", "--json", "--dir", str(directory)],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "acme"
