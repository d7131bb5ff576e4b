"""Pronunciation lexicons: PLS files read and refused with their line, matching, precedence,
languages, and keys. What the engines and the service make of them: ``test_lexicon_speech``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from ttsd.engines.base import phoneme_span
from ttsd.errors import ConfigError, InvalidRequest, UnknownLexicon, UnsupportedLexicon
from ttsd.jobs.model import Job
from ttsd.jobs.pieces import piece_keys
from ttsd.pls import LexiconError
from ttsd.voices import Catalogue

from .lexicon_files import ACME, HEAD, NS, POLYPHONES, catalogue, job, lexeme, pls, write


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
