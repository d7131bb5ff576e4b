"""ChatTTS (2Noise), loaded from a local directory: the model this service was designed around.

Weights are never downloaded: ``TTSD_CHATTTS_DIR`` holds ChatTTS's ``asset/`` tree, loaded with
``Chat.load(source="custom")``, which checks every file against ChatTTS's published SHA-256 map.

Beside the weights, an optional ``ttsd-chattts.json`` may give:

- ``voices``: the speaker embedding (the string ChatTTS's ``spk_emb`` takes) of each voice, to pin
  speakers of your choosing. Without it each voice is the speaker ChatTTS samples from the
  weights' speaker statistics under a fixed seed: the same speaker on every load, never a random one.
- ``sha256`` and ``config``, for a model other than the published one (a reduced test model): the
  hashes its files are checked against, and the module sizes ChatTTS builds before loading them
  (ChatTTS keeps those in code, not beside the weights). Real weights need neither, and keep the
  official check.

Sampling is seeded (the request's seed, else the voice's), so a voice sounds the same every time.
Text refinement is off (it changes the words) and so is ChatTTS's own splitting (the service splits
sentences). Running out of GPU memory frees the cache and retries the sentence once, then fails the
job with a retryable error; the process stays up.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineOutOfMemory, EngineUnavailable, JobError
from .base import Engine, EngineSpec, Pcm, Voice, package_version

_INSTALL = "pip install 'ttsd[chattts]'"
_SIDE_FILE = "ttsd-chattts.json"
# ChatTTS makes about 47 audio tokens per second of speech. At its normal pace no sentence is
# spoken slower than 2 characters a second (a longer generation is the model babbling, and is cut
# there) or faster than about 19 (a shorter one is the known early stop: the floor forbids it).
# Both bounds stretch with the requested speed.
_MAX_TOKENS_PER_CHAR = 24
_MIN_TOKENS_PER_CHAR = 2.5
_MIN_TOKENS = 64
_SPEAKER_SEEDS = {1: 1111, 2: 2222, 3: 3333, 4: 4444}
_LANG = {"cmn": "zh", "en-US": "en"}


_GENDERS = {1: "female", 2: "male", 3: "female", 4: "male"}
# Four pinned speakers, each reading Mandarin and English.
VOICES = tuple(
    Voice(
        f"{prefix}-chattts-{n}", "chattts", f"speaker-{n}", language, gender, f"ChatTTS speaker {n}, {label}"
    )
    for prefix, language, label in (("zh", "cmn", "Mandarin"), ("en", "en-US", "English"))
    for n, gender in _GENDERS.items()
)


def import_torchaudio() -> None:
    """PyPI's torchaudio wheels carry a C++ extension linked against CUDA's libraries, which a
    CPU-only torch lacks, so ``import torchaudio`` fails there. ChatTTS and vocos use only its
    Python parts (mel spectrograms, mel scales), which torchaudio runs without the extension when
    told it is absent: that is what this does, and only when the extension cannot load."""
    try:
        import torchaudio  # type: ignore[import-untyped]
    except OSError:
        absent = types.ModuleType("torchaudio._extension")
        absent._IS_TORCHAUDIO_EXT_AVAILABLE = False  # type: ignore[attr-defined]
        absent._IS_ALIGN_AVAILABLE = False  # type: ignore[attr-defined]

        def fail_if_no_align(func: Any) -> Any:
            def unavailable(*_: Any, **__: Any) -> Any:
                raise RuntimeError("torchaudio's C++ extension is not available with this torch")

            return unavailable

        absent.fail_if_no_align = fail_if_no_align  # type: ignore[attr-defined]
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio._extension"] = absent
        import torchaudio  # noqa: F401


class ChatTTSEngine(Engine):
    sample_rate = 24000

    def __init__(self, chat: Any, speakers: dict[str, str], max_tokens: int, torch: Any) -> None:
        self._chat = chat
        self._speakers = speakers
        self._max_tokens = max_tokens
        self._torch = torch

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        speaker = self._speakers.get(voice.speaker)
        if speaker is None:
            raise JobError(f"ChatTTS has no speaker {voice.speaker!r}")
        # [speed_0] to [speed_9], [speed_5] being ChatTTS's normal pace.
        pace = min(9, max(0, round(5 * speed)))
        params = self._chat.InferCodeParams(
            prompt=f"[speed_{pace}]",
            spk_emb=speaker,
            manual_seed=_SPEAKER_SEEDS[int(voice.speaker.rsplit("-", 1)[1])] if seed is None else seed,
            max_new_token=min(
                self._max_tokens, round((_MIN_TOKENS + _MAX_TOKENS_PER_CHAR * len(text)) / speed)
            ),
            min_new_token=min(self._max_tokens // 2, round(_MIN_TOKENS_PER_CHAR * len(text) / speed)),
            show_tqdm=False,
        )
        try:
            return self._infer(text, voice, params)
        except self._torch.cuda.OutOfMemoryError:
            # Another slot on the card may have taken the memory for a moment: free what this
            # process caches and try the sentence once more.
            self._torch.cuda.empty_cache()
            try:
                return self._infer(text, voice, params)
            except self._torch.cuda.OutOfMemoryError as exc:
                self._torch.cuda.empty_cache()
                raise EngineOutOfMemory(
                    "ChatTTS ran out of GPU memory on this sentence twice; try again shortly", retry_after=5
                ) from exc

    def _infer(self, text: str, voice: Voice, params: Any) -> Pcm:
        wavs = self._chat.infer(
            [text],
            lang=_LANG.get(voice.language),
            skip_refine_text=True,
            split_text=False,
            params_infer_code=params,
        )
        if not wavs:
            return np.zeros(0, np.float32)
        return np.asarray(wavs[0], dtype=np.float32).reshape(-1)


class ChatTTSSpec(EngineSpec):
    name = "chattts"
    sample_rate = 24000
    voices = VOICES
    device_kinds = ("cpu", "cuda")

    def __init__(self, model_dir: Path | None = None, max_tokens: int = 2048) -> None:
        self.model_dir = model_dir
        self.max_tokens = max_tokens

    def bind(self, settings: Any) -> EngineSpec:
        return ChatTTSSpec(settings.chattts_dir, settings.chattts_max_tokens)

    @property
    def warm_voices(self) -> tuple[Voice, ...]:
        # Every speaker once, so no first request pays for its kernels.
        return tuple(v for v in self.voices if v.language == "cmn")

    @functools.cached_property
    def version(self) -> str:
        # The weights are part of the output's identity: their hashes (the map they are checked
        # against) go into the cache key, so other weights never answer from this cache. Read once:
        # it is part of every request's key, and the weights change only with a restart.
        try:
            side = self._side()
        except EngineUnavailable:
            side = {"sha256": "unreadable"}  # loading says why; no audio is made with it
        weights = side.get("sha256") or "official"
        digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:12]
        voices = hashlib.sha256(json.dumps(side.get("voices", {}), sort_keys=True).encode()).hexdigest()[:8]
        return f"chattts {package_version('chattts')}; weights {digest}; voices {voices}"

    def _side(self) -> dict[str, Any]:
        if self.model_dir is None:
            return {}
        path = self.model_dir / _SIDE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"ChatTTS: {path} is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise EngineUnavailable(f"ChatTTS: {path} must hold a JSON object")
        return data

    def load(self, *, threads: int, device: str = "cpu") -> Engine:
        if self.model_dir is None:
            raise EngineUnavailable("ChatTTS needs its weights: set TTSD_CHATTTS_DIR to their directory")
        if not self.model_dir.is_dir():
            raise EngineUnavailable(f"TTSD_CHATTTS_DIR={self.model_dir} is not a directory")
        try:
            import torch

            import_torchaudio()
            import ChatTTS  # type: ignore[import-untyped]
            from ChatTTS.config import config as chattts_config  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineUnavailable(f"ChatTTS is not installed ({exc}): {_INSTALL}") from exc
        torch.set_num_threads(threads)
        target = _torch_device(torch, device)
        side = self._side()
        chat = ChatTTS.Chat(logging.getLogger("ttsd.chattts"))
        missing = _missing(self.model_dir, chat.config.path)
        if missing:
            raise EngineUnavailable(
                f"TTSD_CHATTTS_DIR={self.model_dir} lacks {', '.join(missing)} (ChatTTS's asset/ tree)"
            )
        if "config" in side:
            chat.config = _config(chattts_config, side["config"])
        if "sha256" in side:
            chat.sha256_map = side["sha256"]
        if not chat.load(source="custom", custom_path=str(self.model_dir), compile=False, device=target):
            raise EngineUnavailable(
                f"ChatTTS refused the weights in TTSD_CHATTTS_DIR={self.model_dir}: a file does not match "
                "its SHA-256 (see the log above)"
            )
        return ChatTTSEngine(chat, self._speakers(chat, side, torch), self.max_tokens, torch)

    def _speakers(self, chat: Any, side: dict[str, Any], torch: Any) -> dict[str, str]:
        pinned = side.get("voices", {})
        speakers = {}
        for n, seed in _SPEAKER_SEEDS.items():
            name = f"speaker-{n}"
            given = pinned.get(f"zh-chattts-{n}") or pinned.get(name)
            if given:
                speakers[name] = str(given)
                continue
            torch.manual_seed(seed)
            speakers[name] = chat.sample_random_speaker()
        return speakers


def _torch_device(torch: Any, device: str) -> Any:
    if device == "cpu":
        return torch.device("cpu")
    gpu = int(device.split(":", 1)[1])
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            f"ChatTTS is placed on {device}, but this torch cannot use CUDA (a CPU build, or no GPU)"
        )
    if gpu >= torch.cuda.device_count():
        raise EngineUnavailable(
            f"ChatTTS is placed on {device}, but torch sees {torch.cuda.device_count()} GPU(s)"
        )
    return torch.device(device)


def _missing(root: Path, paths: Any) -> list[str]:
    """The asset files ChatTTS will look for and not find, named as in the directory."""
    wanted = []
    for relative in dataclasses.asdict(paths).values():
        if relative.endswith("gpt"):
            wanted += [f"{relative}/config.json", f"{relative}/model.safetensors"]
        elif relative.endswith("tokenizer"):
            wanted += [
                f"{relative}/{f}"
                for f in ("special_tokens_map.json", "tokenizer_config.json", "tokenizer.json")
            ]
        else:
            wanted.append(relative)
    return [w for w in wanted if not (root / w).is_file()]


def _config(c: Any, sizes: dict[str, Any]) -> Any:
    """ChatTTS's Config with the module sizes of ``sizes`` (fresh instances: the dataclasses'
    defaults are shared by every Chat in the process)."""
    v = sizes["vocos"]
    dvae = sizes["dvae"]
    return c.Config(
        path=c.Path(),
        decoder=c.Decoder(**sizes["decoder"]),
        dvae=c.DVAE(
            encoder=c.Decoder(**dvae["encoder"]),
            decoder=c.Decoder(**dvae["decoder"]),
            vq=c.VQ(**{**dvae["vq"], "levels": tuple(dvae["vq"]["levels"])}),
        ),
        gpt=c.GPT(**sizes["gpt"]),
        embed=c.Embed(**sizes["embed"]),
        vocos=c.Vocos(
            feature_extractor=c.FeatureExtractor(
                init_args=c.FeatureExtractorInitArgs(**v["feature_extractor"])
            ),
            backbone=c.Backbone(init_args=c.BackboneInitArgs(**v["backbone"])),
            head=c.FourierHead(init_args=c.FourierHeadInitArgs(**v["head"])),
        ),
        spk_stat=sizes["spk_stat"],
    )


SPEC = ChatTTSSpec()
