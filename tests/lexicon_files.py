"""What the lexicon tests share: PLS files written in a test's directory (a brand list and two
Mandarin polyphones), the catalogue that reads them, and a job prepared with it."""

from __future__ import annotations

from pathlib import Path

from ttsd.config import Settings
from ttsd.jobs.model import Job
from ttsd.links import Links
from ttsd.prepare import SynthesisRequest, prepare_job
from ttsd.voices import Catalogue

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
