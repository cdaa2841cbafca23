"""The state of one simulated task and of one upload that has not been committed yet."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.nodeodm.options import OptionValue
from appliance.nodeodm.status import TaskStatus
from appliance.simnode.odmlog import Script


@dataclass(eq=False)
class PendingUpload:
    """A task between `/task/new/init` and `/task/new/commit`: invisible to info and list."""

    uuid: str
    directory: Path
    fields: dict[str, str] = field(default_factory=dict)
    options: list[dict[str, OptionValue]] = field(default_factory=list)


@dataclass(eq=False)
class SimTask:
    """One committed task; mutated only by the engine, on the event loop."""

    uuid: str
    name: str | None  # None when the client sent no name field: NodeODM then shows none
    project_dir: Path
    images: list[str]
    options: list[dict[str, OptionValue]]
    skip_post_processing: bool
    outputs: list[str]
    date_created: int  # ms since the epoch, as NodeODM reports it
    queue_seq: int
    webhook: str | None = None  # kept as NodeODM keeps it; the simulated node never calls it
    status: TaskStatus = TaskStatus.QUEUED
    error_message: str | None = None
    progress: float = 0.0
    output: list[str] = field(default_factory=list)
    processing_ms: int = -1  # final processing time; live while RUNNING, see processing_time()
    initializing: bool = False  # RUNNING but not started, like NodeODM while it lays out a committed upload
    # the current run; `generation` changes whenever a run is abandoned, so stale work is ignored
    generation: int = 0
    started: float = 0.0  # monotonic
    last_tick: float = 0.0
    active_seconds: float = 0.0  # processing time that counts towards progress (not while stalled)
    script: Script = field(default_factory=list)
    cursor: int = 0
    fail_at: float | None = None
    stalled: bool = False
    building: asyncio.Task[None] | None = None
    executor: asyncio.Task[None] | None = None  # a split task's submodels on sm-cluster (split_merge.py)

    @property
    def all_zip(self) -> Path:
        return self.project_dir / "all.zip"

    @property
    def option_map(self) -> dict[str, OptionValue]:
        return {o["name"]: o["value"] for o in self.options}

    def processing_time(self, now: float) -> int:
        """Milliseconds of processing: live while running, -1 before the start."""
        if self.status is TaskStatus.RUNNING and not self.initializing:
            return int((now - self.started) * 1000)
        return self.processing_ms

    def info(self, now: float) -> dict[str, Any]:
        """The body of `GET /task/{uuid}/info`, in NodeODM's field order."""
        status: dict[str, Any] = {"code": int(self.status)}
        if self.error_message is not None:
            status["errorMessage"] = self.error_message
        named = {} if self.name is None else {"name": self.name}
        return {
            "uuid": self.uuid,
            **named,
            "dateCreated": self.date_created,
            "processingTime": self.processing_time(now),
            "status": status,
            "options": [{"name": o["name"], "value": o["value"]} for o in self.options],
            "imagesCount": len(self.images),
            "progress": round(self.progress, 2),
        }
