"""Engine pools: which engines share which slots, on which devices.

``TTSD_POOLS`` is a comma-separated list of pools, each ``ENGINE[+ENGINE...]:SLOTS[@DEVICE[+DEVICE...]]``:

- ``piper+hibari+espeak:2,kokoro:1``: two processes that load piper, hibari and eSpeak, and one
  that loads only Kokoro;
- ``kokoro:4@cuda:0+cuda:1``: four Kokoro processes, spread over two GPUs (slot i on device
  i mod 2).

A pool is the unit of isolation: its processes load only its engines, and it has its own queue,
depth, Retry-After, shedding and readiness. An engine belongs to one pool. Devices are ``cpu``
(the default) and ``cuda:N``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

MAX_SLOTS = 256
_ENGINE = re.compile(r"^[a-z][a-z0-9_-]*$")
_DEVICE = re.compile(r"^(cpu|cuda:(\d+))$")
FORMAT = "ENGINE[+ENGINE...]:SLOTS[@DEVICE[+DEVICE...]]"


@dataclass(frozen=True)
class PoolSpec:
    engines: tuple[str, ...]
    slots: int
    devices: tuple[str, ...] = ("cpu",)

    @property
    def name(self) -> str:
        """The pool's label in metrics, logs and queue names: its engines, joined."""
        return "+".join(self.engines)

    def device(self, slot: int) -> str:
        """Slots are spread over the devices in turn."""
        return self.devices[slot % len(self.devices)]

    def __str__(self) -> str:
        placed = "" if self.devices == ("cpu",) else "@" + "+".join(self.devices)
        return f"{self.name}:{self.slots}{placed}"


def cuda_index(device: str) -> int | None:
    """The GPU number of a ``cuda:N`` device; None for the CPU."""
    match = _DEVICE.match(device)
    if match is None:
        raise ConfigError(f"unknown device {device!r}: use cpu or cuda:N")
    return None if match.group(2) is None else int(match.group(2))


def parse_pool(text: str) -> PoolSpec:
    item = text.strip()
    head, at, placement = item.partition("@")
    engines_part, colon, slots_part = head.partition(":")
    if not colon:
        raise ConfigError(f"pool {item!r} has no slot count: the format is {FORMAT}, e.g. kokoro:1")
    engines = tuple(e.strip() for e in engines_part.split("+"))
    for engine in engines:
        if not _ENGINE.match(engine):
            raise ConfigError(f"pool {item!r}: {engine!r} is not an engine name (the format is {FORMAT})")
    if len(set(engines)) != len(engines):
        raise ConfigError(f"pool {item!r} names an engine twice")
    try:
        slots = int(slots_part.strip())
    except ValueError:
        raise ConfigError(f"pool {item!r}: slots must be a whole number, not {slots_part!r}") from None
    if not 1 <= slots <= MAX_SLOTS:
        raise ConfigError(f"pool {item!r}: slots must be between 1 and {MAX_SLOTS}")
    devices: tuple[str, ...] = ("cpu",)
    if at:
        devices = tuple(d.strip() for d in placement.split("+"))
        for device in devices:
            if not _DEVICE.match(device):
                raise ConfigError(f"pool {item!r}: unknown device {device!r} (use cpu or cuda:N)")
        if len(set(devices)) != len(devices):
            raise ConfigError(f"pool {item!r} names a device twice")
    return PoolSpec(engines, slots, devices)


def parse_pools(text: str) -> tuple[PoolSpec, ...]:
    """Parse ``TTSD_POOLS``; every mistake is a ConfigError that says what is wrong and where."""
    items = [part for part in text.split(",") if part.strip()]
    if not items:
        raise ConfigError(f"TTSD_POOLS is empty: give at least one pool, {FORMAT}")
    pools = tuple(parse_pool(item) for item in items)
    seen: dict[str, PoolSpec] = {}
    for pool in pools:
        for engine in pool.engines:
            if engine in seen:
                raise ConfigError(
                    f"engine {engine!r} is in two pools ({seen[engine]} and {pool}): an engine belongs to one"
                )
            seen[engine] = pool
    return pools


def gpu_count(proc: Path = Path("/proc/driver/nvidia/gpus")) -> int:
    """NVIDIA GPUs the driver exposes to this machine (or container), without loading CUDA."""
    try:
        return sum(1 for _ in proc.iterdir())
    except OSError:
        return 0


def check_devices(pools: tuple[PoolSpec, ...], device_kinds: dict[str, tuple[str, ...]]) -> None:
    """Refuse, at start-up, a pool its engines cannot run on, or a GPU this machine lacks."""
    gpus: int | None = None
    for pool in pools:
        for device in pool.devices:
            gpu = cuda_index(device)
            if gpu is None:
                continue
            for engine in pool.engines:
                if "cuda" not in device_kinds.get(engine, ("cpu",)):
                    raise ConfigError(f"pool {pool}: engine {engine!r} runs on the cpu only, not on {device}")
            if gpus is None:
                gpus = gpu_count()
            if gpu >= gpus:
                have = "no NVIDIA GPU" if gpus == 0 else f"{gpus} NVIDIA GPU{'s' if gpus > 1 else ''}"
                raise ConfigError(f"pool {pool} is placed on {device}, but this machine has {have}")
