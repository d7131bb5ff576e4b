"""Pronunciation lexicons as spoken: what the engines make of them (eSpeak's own phoneme trace,
real audio, IPA engines) and the service's routes, caching and start-up checks."""

from __future__ import annotations

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

from ttsd.engines import REGISTRY, select
from ttsd.engines.base import Phonemes, phoneme_span, segments
from ttsd.voices import Catalogue

from .conftest import finished, transcribe
from .lexicon_files import ACME, POLYPHONES, catalogue, job, lexeme, pls, write
from .servers import Server, base_env, start_server, stop_server


@pytest.fixture
def lexicons(tmp_path: Path) -> Catalogue:
    return catalogue(write(tmp_path / "lex", {"acme.pls": ACME, "zh-polyphones.pls": POLYPHONES}))


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


NO_GRAPHEME = pls("en-US", "<lexeme>\n<alias>b</alias></lexeme>")


@pytest.mark.slow
def test_serve_refuses_a_broken_lexicon_at_start(tmp_path: Path) -> None:
    directory = write(tmp_path / "lexicons", {"acme.pls": ACME, "broken.pls": NO_GRAPHEME})
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
