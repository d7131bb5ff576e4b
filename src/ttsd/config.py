"""The one settings object. Built by the CLI (or a test) and passed to ``create_app``; nothing
reads the environment anywhere else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_slots() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTSD_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    data_dir: Path = Path("ttsd-data")
    queue: Literal["inprocess"] = "inprocess"
    storage: Literal["local"] = "local"
    public_base_url: str | None = None

    engines: Annotated[tuple[str, ...], NoDecode] = ("piper", "hibari", "espeak")
    default_voice: str = "en-joe"
    # Engine processes, each running one synthesis at a time: the hard concurrency limit.
    engine_slots: int = Field(default_factory=_default_slots, ge=1, le=256)
    # onnxruntime threads per engine process; slots x threads should not exceed the cores.
    engine_threads: int = Field(1, ge=1, le=64)
    queue_limit: int = Field(256, ge=1)
    job_timeout: float = Field(300.0, gt=0)

    cache_ttl: int = Field(86400, ge=1)
    cache_max_bytes: int = Field(2 * 1024**3, ge=1)
    task_ttl: int = Field(3600, ge=1)

    max_text_chars: int = Field(5000, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)

    debug: bool = False
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @field_validator("engines", mode="before")
    @classmethod
    def _split_engines(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"
