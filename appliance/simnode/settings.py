"""How a simulated NodeODM is set up, and the faults it injects (which can change while it runs)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

API_VERSION = "2.2.4"  # the NodeODM version we imitate; PyODM needs >= 1.4.0 for chunked uploads


@dataclass(frozen=True)
class SimnodeSettings:
    """Everything `passel simnode` can be told; the defaults look like a small real node."""

    host: str = "127.0.0.1"
    port: int = 3001
    max_images: int | None = None
    slots: int = 1  # maxParallelTasks
    cores: int = 4
    memory_mb: int = 8192
    engine: str = "odm"
    engine_version: str = "3.5.6-sim"
    seconds_per_image: float = 0.5
    token: str | None = None
    fail_rate: float = 0.0
    drop_upload_rate: float = 0.0
    stall_at: float | None = None  # progress % at which tasks stall forever
    data_dir: Path | None = None  # None: a temporary directory, removed at shutdown
    seed: int | None = None  # makes fault randomness reproducible
    name: str = "simnode"
    asset_kb: int = 2  # size of each binary result file, to make all.zip big for download benchmarks
    # NodeODM shows a committed task as RUNNING with processingTime -1 while it moves the files, then
    # QUEUED if no slot is free; set this (e.g. 0.05) to reproduce that window, 0 skips it
    init_seconds: float = 0.0
    # Behave like NodeODM 2.2.x where it is fragile: a NUL byte in an upload's file name brings the
    # whole server down. For testing that Passel shields the nodes behind it.
    fragile: bool = False

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError("max_images must be at least 1 (or None for no limit)")
        if self.seconds_per_image < 0 or not math.isfinite(self.seconds_per_image):
            raise ValueError("seconds_per_image must be a finite number >= 0")
        if self.init_seconds < 0 or not math.isfinite(self.init_seconds):
            raise ValueError("init_seconds must be a finite number >= 0")
        if self.asset_kb < 0:
            raise ValueError("asset_kb must be >= 0")
        Faults(self.fail_rate, self.drop_upload_rate, self.stall_at).check()


@dataclass
class Faults:
    """Faults injected into tasks and uploads; mutable so demos and tests can flip them live."""

    fail_rate: float = 0.0
    drop_upload_rate: float = 0.0
    stall_at: float | None = None

    @classmethod
    def from_settings(cls, settings: SimnodeSettings) -> Faults:
        return cls(settings.fail_rate, settings.drop_upload_rate, settings.stall_at)

    def check(self) -> None:
        """Raise ValueError unless every value is in range."""
        for name in ("fail_rate", "drop_upload_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.stall_at is not None and not 0.0 <= self.stall_at <= 100.0:
            raise ValueError(f"stall_at must be between 0 and 100 (or null), not {self.stall_at}")

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial JSON update; nothing changes unless all of it is valid."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"Unknown fault(s): {', '.join(sorted(unknown))}")
        merged = asdict(self)
        for name, value in changes.items():
            nullable = name == "stall_at"
            if value is None and nullable:
                merged[name] = None
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                merged[name] = float(value)
            else:
                raise ValueError(f"{name} must be a number{' or null' if nullable else ''}")
        candidate = Faults(**merged)
        candidate.check()
        self.fail_rate, self.drop_upload_rate, self.stall_at = (
            candidate.fail_rate, candidate.drop_upload_rate, candidate.stall_at)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
