"""A tiny ChatTTS model for tests: ChatTTS's own modules at a reduced size with random weights
(seeded, so the same bytes every time), saved as the files of the real asset tree, with the
side file (``ttsd-chattts.json``) that gives the adapter their sizes and SHA-256 hashes.

Built once per test session (about ten seconds, 3 MB); nothing is downloaded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN = 64  # the GPT's hidden size, and so the speaker embeddings' size
_SPECIALS = (
    ["[Stts]", "[Ptts]", "[spk_emb]", "[empty_spk]", "[Sbreak]", "[Pbreak]", "[Ebreak]"]
    + ["[uv_break]", "[v_break]", "[lbreak]", "[llaugh]"]
    + [f"[speed_{i}]" for i in range(10)]
    + [f"[break_{i}]" for i in range(8)]
    + [f"[laugh_{i}]" for i in range(3)]
    + [f"[oral_{i}]" for i in range(10)]
)
_BASE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
# A few Chinese characters, so Mandarin text is more than unknown tokens.
_HANZI = list("今天气很好你我的是了不在有人这中大为上个国和")
VOCAB = (
    _BASE
    + _SPECIALS
    + _LETTERS
    + ["##" + c for c in _LETTERS]
    + _HANZI
    + list(".,!?'-:;。，")
    + list("0123456789")
)
FILES = (
    "asset/Decoder.safetensors",
    "asset/DVAE.safetensors",
    "asset/Embed.safetensors",
    "asset/Vocos.safetensors",
    "asset/gpt/config.json",
    "asset/gpt/model.safetensors",
    "asset/tokenizer/special_tokens_map.json",
    "asset/tokenizer/tokenizer_config.json",
    "asset/tokenizer/tokenizer.json",
)


def sizes() -> dict[str, Any]:
    import pybase16384

    return {
        "decoder": {"idim": HIDDEN // 2, "odim": HIDDEN // 2, "hidden": 32, "n_layer": 1, "bn_dim": 16},
        "dvae": {
            "encoder": {"idim": 32, "odim": 64, "hidden": 32, "n_layer": 1, "bn_dim": 16},
            "decoder": {"idim": 32, "odim": 32, "hidden": 32, "n_layer": 1, "bn_dim": 16},
            "vq": {"dim": 64, "levels": [5, 5, 5, 5], "G": 2, "R": 2},
        },
        "gpt": {
            "hidden_size": HIDDEN,
            "intermediate_size": 128,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "use_cache": False,
            "max_position_embeddings": 2048,
            "spk_emb_dim": 192,
            "spk_KL": False,
            "num_audio_tokens": 626,
            "num_text_tokens": len(VOCAB),
            "num_vq": 4,
        },
        "embed": {"hidden_size": HIDDEN, "num_audio_tokens": 626, "num_text_tokens": len(VOCAB), "num_vq": 4},
        # 24 kHz, n_fft 1024, hop 256 and 100 mel bands are fixed in ChatTTS's code.
        "vocos": {
            "feature_extractor": {
                "sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"
            },
            "backbone": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
            "head": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "center"},
        },
        # The speaker statistics: float16 standard deviations, then means.
        "spk_stat": pybase16384.encode_to_string(
            np.concatenate([np.full(HIDDEN, 0.5), np.zeros(HIDDEN)]).astype(np.float16).tobytes()
        ),
    }  # fmt: skip


def _write_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    tokenizer = Tokenizer(WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        lowercase=True, clean_text=True, handle_chinese_chars=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(_BASE + _SPECIALS)  # "[spk_emb]" and the rest stay whole
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 1024, **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def build(root: Path) -> Path:
    """Write the tiny model's asset tree and side file under ``root``; returns ``root``."""
    from ttsd.engines.chattts import _config, import_torchaudio

    import_torchaudio()
    import torch
    from ChatTTS.config import config as chattts_config
    from ChatTTS.model import DVAE, Embed
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    def save(module: torch.nn.Module, path: Path) -> None:
        save_file({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}, str(path))

    torch.manual_seed(0)
    asset = root / "asset"
    (asset / "gpt").mkdir(parents=True, exist_ok=True)
    (asset / "tokenizer").mkdir(exist_ok=True)
    d = sizes()
    cfg = _config(chattts_config, d)
    # Built as ChatTTS's Chat._load builds each part.
    vocos = Vocos(
        feature_extractor=instantiate_class(args=(), init=dataclasses.asdict(cfg.vocos.feature_extractor)),
        backbone=instantiate_class(args=(), init=dataclasses.asdict(cfg.vocos.backbone)),
        head=instantiate_class(args=(), init=dataclasses.asdict(cfg.vocos.head)),
    )
    save(vocos, asset / "Vocos.safetensors")
    dvae = DVAE(
        decoder_config=dataclasses.asdict(cfg.dvae.decoder),
        encoder_config=dataclasses.asdict(cfg.dvae.encoder),
        vq_config=dataclasses.asdict(cfg.dvae.vq),
        dim=cfg.dvae.decoder.idim,
    )
    save(dvae, asset / "DVAE.safetensors")
    save(
        DVAE(decoder_config=dataclasses.asdict(cfg.decoder), dim=cfg.decoder.idim),
        asset / "Decoder.safetensors",
    )
    embed = Embed(
        cfg.embed.hidden_size, cfg.embed.num_audio_tokens, cfg.embed.num_text_tokens, cfg.embed.num_vq
    )
    save(embed, asset / "Embed.safetensors")
    # ChatTTS loads its GPT with LlamaModel.from_pretrained and drops the token embedding.
    llama = LlamaConfig(
        **dataclasses.asdict(cfg.gpt), vocab_size=1, bos_token_id=None, eos_token_id=None, pad_token_id=None
    )
    LlamaModel(llama).save_pretrained(str(asset / "gpt"), safe_serialization=True)
    _write_tokenizer(asset / "tokenizer")
    # Keyed as ChatTTS's own map: "sha256_" + the path with "/" and "." as "_".
    hashes = {
        "sha256_" + f.replace("/", "_").replace(".", "_"): hashlib.sha256((root / f).read_bytes()).hexdigest()
        for f in FILES
    }
    (root / "ttsd-chattts.json").write_text(json.dumps({"config": d, "sha256": hashes}, indent=1))
    return root
