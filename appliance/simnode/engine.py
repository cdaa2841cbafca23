"""The simulated node's task table and scheduler: queues tasks into slots and plays their runs.

One background loop ticks every TICK_SECONDS: it advances each running task's progress by the time
that passed (seconds_per_image × images for a whole run), appends ODM-like output as progress
crosses each line, applies the live faults, and starts queued tasks when slots free up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import re
import shutil
import time
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path

from appliance.nodeodm import replies
from appliance.nodeodm.options import OptionSpec, OptionValue, has_option
from appliance.nodeodm.status import TaskStatus
from appliance.simnode import odmlog
from appliance.simnode.archive import build_all_zip, parse_outputs
from appliance.simnode.assets import ResultContext, default_outputs
from appliance.simnode.catalog import POST_PROCESSING_OPTIONS, load_catalog
from appliance.simnode.intake import IntakeError, prepare_project
from appliance.simnode.settings import API_VERSION, Faults, SimnodeSettings
from appliance.simnode.split_merge import Parent, SplitMerge, SplitPlan, SubmodelFailed, plan_split
from appliance.simnode.tasks import PendingUpload, SimTask

log = logging.getLogger("passel.simnode")

TICK_SECONDS = 0.05
MEMORY_PER_TASK = 1024 ** 3  # what a running task appears to use, for availableMemory
# NodeODM's check of the set-uuid header
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-7][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
# what JavaScript's parseInt reads from the start of a string: a decimal number, or a hex one after 0x
JS_INT = re.compile(r"\s*([+-]?)(?:0[xX]([0-9a-fA-F]*)|([0-9]+))")


class TaskActionError(Exception):
    """A cancel, remove or restart that cannot happen; answered as `{"success": false, "error": ...}`."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _task_name(given: str | None) -> str | None:
    """NodeODM names a task whose name is empty after its creation time, e.g. 'Task of
    2026-11-22T16:16:02.793Z'; a task sent with no name field at all keeps none."""
    if given != "":
        return given
    return "Task of " + datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date_created(raw: str | None) -> int:
    """NodeODM takes JavaScript's parseInt of the field (so '1700000000000.9' is 1700000000000),
    and the current time where that is not a number."""
    match = JS_INT.match(raw or "")
    if match is None or match.group(2) == "":  # nothing numeric, or "0x" without digits
        return _now_ms()
    sign, hexadecimal, decimal = match.groups()
    value = int(hexadecimal, 16) if hexadecimal else int(decimal)
    return -value if sign == "-" else value


def with_post_processing(options: list[dict[str, OptionValue]], skip: bool) -> list[dict[str, OptionValue]]:
    """NodeODM turns on the options its post-processing needs unless skipPostProcessing is 'true'."""
    if skip:
        return list(options)
    return list(options) + [{"name": n, "value": True} for n in POST_PROCESSING_OPTIONS if not has_option(options, n)]


class Engine:
    """Owns every task and pending upload of one simulated node."""

    def __init__(self, settings: SimnodeSettings) -> None:
        self.settings = settings
        self.faults = Faults.from_settings(settings)
        self.catalog: tuple[OptionSpec, ...] = ()
        self.tasks: dict[str, SimTask] = {}
        self.pending: dict[str, PendingUpload] = {}
        self._committing: set[str] = set()  # between pending and tasks while files are laid out
        self.upload_root = self.data_root = Path()
        self._rng = random.Random(settings.seed)
        self._seq = itertools.count()
        self._label = settings.name

    def open(self, data_dir: Path) -> None:
        """Load the option catalog and make the folders; the app calls this at startup, not in its factory."""
        self.catalog = load_catalog(self.settings.cores)
        self.upload_root, self.data_root = data_dir / "tmp", data_dir / "data"
        self.upload_root.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)

    # --- uploads ---------------------------------------------------------------------------

    def reserve_upload(self, requested_uuid: str | None) -> PendingUpload:
        """Claim a uuid (the `set-uuid` header or a fresh one) and a folder for its files.

        Like NodeODM, a `set-uuid` of an upload not yet committed starts it again with the files
        it already has: a client retrying its init must not lose them.
        """
        if requested_uuid is not None:
            taken = any(requested_uuid in where for where in (self.tasks, self._committing))
            if taken or not UUID_PATTERN.match(requested_uuid):
                raise IntakeError(f"Invalid set-uuid: {requested_uuid}")
            if requested_uuid in self.pending:
                return self.pending[requested_uuid]
        uuid = requested_uuid or str(uuidlib.uuid4())
        directory = self.upload_root / uuid
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        pending = self.pending[uuid] = PendingUpload(uuid, directory)
        return pending

    def discard_upload(self, pending: PendingUpload) -> None:
        self.pending.pop(pending.uuid, None)
        shutil.rmtree(pending.directory, ignore_errors=True)

    def drop_this_upload(self) -> bool:
        """Decide whether the drop-upload fault hits this request."""
        rate = self.faults.drop_upload_rate
        return rate > 0 and self._rng.random() < rate

    async def commit(self, uuid: str) -> SimTask:
        """Make a task of a pending upload; it is QUEUED, or RUNNING at once if a slot is free."""
        pending = self.pending.pop(uuid, None)
        if pending is None:
            raise IntakeError(replies.TASK_NOT_FOUND_UPLOAD)
        project_dir = self.data_root / uuid
        self._committing.add(uuid)
        try:
            images = await asyncio.to_thread(prepare_project, pending.directory, project_dir, self.settings.max_images)
        finally:
            self._committing.discard(uuid)
        fields = pending.fields
        skip = fields.get("skipPostProcessing") == "true"
        task = SimTask(
            uuid=uuid,
            name=_task_name(fields.get("name")),
            project_dir=project_dir,
            images=images,
            options=with_post_processing(pending.options, skip),
            skip_post_processing=skip,
            outputs=parse_outputs(fields.get("outputs")),
            date_created=_date_created(fields.get("dateCreated")),
            queue_seq=next(self._seq),
            webhook=fields.get("webhook"),
        )
        if self.settings.init_seconds > 0:
            task.status, task.initializing = TaskStatus.RUNNING, True
            asyncio.get_running_loop().call_later(self.settings.init_seconds, self._initialized, task, task.generation)
        self.tasks[uuid] = task
        log.info("%s: task %s created with %d images", self._label, uuid[:8], len(images))
        self._start_ready(time.monotonic())
        return task

    # --- queries ---------------------------------------------------------------------------

    def node_info(self) -> dict[str, object]:
        """The body of `GET /info`."""
        running = sum(t.status is TaskStatus.RUNNING for t in self.tasks.values())
        queued = sum(t.status is TaskStatus.QUEUED for t in self.tasks.values())
        total = self.settings.memory_mb * 1024 * 1024
        return {
            "version": API_VERSION,
            "taskQueueCount": running + queued,
            "totalMemory": total,
            "availableMemory": max(total // 10, total - running * MEMORY_PER_TASK),
            "cpuCores": self.settings.cores,
            "maxImages": self.settings.max_images,
            "maxParallelTasks": self.settings.slots,
            "engineVersion": self.settings.engine_version,
            "engine": self.settings.engine,
        }

    # --- actions ---------------------------------------------------------------------------

    def _find(self, uuid: str) -> SimTask:
        task = self.tasks.get(uuid)
        if task is None:
            raise TaskActionError(f"{uuid} not found")
        return task

    def _abandon_run(self, task: SimTask, status: TaskStatus) -> None:
        task.status = status
        task.generation += 1
        task.stalled, task.initializing = False, False
        if task.executor is not None:
            task.executor.cancel()

    def cancel(self, uuid: str) -> None:
        """Cancel a task; canceling a canceled task is fine, as in NodeODM."""
        task = self._find(uuid)
        if task.status is not TaskStatus.CANCELED:
            self._abandon_run(task, TaskStatus.CANCELED)
            task.processing_ms = -1
            log.info("%s: task %s canceled", self._label, uuid[:8])
            self._start_ready(time.monotonic())

    async def remove(self, uuid: str) -> None:
        """Cancel a task and delete it with its files."""
        task = self._find(uuid)
        del self.tasks[uuid]
        self._abandon_run(task, TaskStatus.CANCELED)
        running = {t for t in (task.building, task.executor) if t is not None}
        if running:
            await asyncio.wait(running)
        await asyncio.to_thread(shutil.rmtree, task.project_dir, True)
        log.info("%s: task %s removed", self._label, uuid[:8])
        self._start_ready(time.monotonic())

    def restart(self, uuid: str, options: list[dict[str, OptionValue]] | None) -> None:
        """Queue a finished task again, optionally with new options; its old results go."""
        task = self._find(uuid)
        if not task.status.restartable:
            raise TaskActionError(replies.CANNOT_RESTART)
        self._abandon_run(task, TaskStatus.QUEUED)
        task.queue_seq = next(self._seq)
        task.date_created = _now_ms()
        task.output, task.progress, task.processing_ms, task.error_message = [], 0.0, -1, None
        if options is not None:
            task.options = with_post_processing(options, task.skip_post_processing)
        task.all_zip.unlink(missing_ok=True)
        log.info("%s: task %s restarted", self._label, uuid[:8])
        self._start_ready(time.monotonic())

    # --- the run loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            self.tick(time.monotonic())
            await asyncio.sleep(TICK_SECONDS)

    def tick(self, now: float) -> None:
        for task in list(self.tasks.values()):
            if task.status is TaskStatus.RUNNING and not task.initializing and task.building is None \
                    and task.executor is None:
                self._advance(task, now)
        self._start_ready(now)

    def _initialized(self, task: SimTask, generation: int) -> None:
        if task.generation == generation and task.initializing:
            task.status, task.initializing = TaskStatus.QUEUED, False
            self._start_ready(time.monotonic())

    async def wait_for_builds(self) -> None:
        """Let result archives being written in threads finish, before their folder is deleted."""
        for task in self.tasks.values():
            if task.executor is not None:
                task.executor.cancel()
        builds = {t for task in self.tasks.values() for t in (task.building, task.executor) if t is not None}
        if builds:
            await asyncio.wait(builds)

    def _start_ready(self, now: float) -> None:
        running = sum(t.status is TaskStatus.RUNNING and not t.initializing for t in self.tasks.values())
        queued = sorted((t for t in self.tasks.values() if t.status is TaskStatus.QUEUED), key=lambda t: t.queue_seq)
        for task in queued[:max(0, self.settings.slots - running)]:
            self._start(task, now)

    def _start(self, task: SimTask, now: float) -> None:
        task.status = TaskStatus.RUNNING
        task.generation += 1
        task.started = task.last_tick = now
        task.active_seconds, task.progress, task.cursor, task.output = 0.0, 0.0, 0, []
        task.script = odmlog.build_script(task.uuid, task.images, task.option_map,
                                          self.settings.engine_version, task.skip_post_processing)
        fails = self._rng.random() < self.faults.fail_rate
        task.fail_at = self._rng.uniform(5.0, 90.0) if fails else None
        self._emit(task)
        log.info("%s: task %s started (%d images)", self._label, task.uuid[:8], len(task.images))
        plan = plan_split(task.option_map, task.images)
        if plan is not None:
            task.executor = asyncio.get_running_loop().create_task(self._split(task, plan, task.generation))

    async def _split(self, task: SimTask, plan: SplitPlan, generation: int) -> None:
        """Act as ODM's split-merge executor (split_merge.py), then complete as any run does."""
        def current() -> bool:
            return task.generation == generation and task.uuid in self.tasks

        def say(line: str) -> None:
            if current():
                task.output.append(line)
                log.info("%s: task %s: %s", self._label, task.uuid[:8], line)

        def set_progress(value: float) -> None:
            if current():
                task.progress = value

        try:
            await SplitMerge(plan, task.project_dir, task.option_map, Parent(say, set_progress), self._label).run()
        except SubmodelFailed as exc:
            if current():
                self._fail(task, time.monotonic(), str(exc), [str(exc)])
            return
        except Exception as exc:  # noqa: BLE001 - a task must never stay RUNNING because its split broke
            log.exception("%s: task %s could not run its submodels", self._label, task.uuid[:8])
            if current():
                self._fail(task, time.monotonic(), "Could not run the submodels", [f"Could not run the submodels: {exc}"])
            return
        finally:
            if task.executor is asyncio.current_task():  # not a newer run's, after a restart
                task.executor = None
        if current():
            task.progress = 100.0
            task.output.append("Compressing all.zip")
            task.building = asyncio.get_running_loop().create_task(self._build(task, generation))

    def _emit(self, task: SimTask) -> None:
        while task.cursor < len(task.script) and task.script[task.cursor][0] <= task.progress:
            task.output.append(task.script[task.cursor][1])
            task.cursor += 1

    def _advance(self, task: SimTask, now: float) -> None:
        elapsed, task.last_tick = now - task.last_tick, now
        duration = self.settings.seconds_per_image * len(task.images)
        active = task.active_seconds + elapsed
        candidate = active / duration * 100.0 if duration > 0 else math.inf
        stall_at = self.faults.stall_at
        if stall_at is not None and task.progress <= stall_at < candidate:
            if not task.stalled:
                log.warning("%s: task %s stalled at %.0f%%", self._label, task.uuid[:8], stall_at)
            task.stalled, task.progress = True, stall_at
            task.active_seconds = stall_at / 100.0 * duration
            self._emit(task)
            return
        task.stalled, task.active_seconds = False, active
        task.progress = min(candidate, 100.0)
        if task.fail_at is not None and task.progress >= task.fail_at:
            task.progress = task.fail_at
            self._emit(task)
            self._fail(task, now, odmlog.FAILURE_MESSAGE, odmlog.failure_lines(odmlog.current_stage(task.script, task.progress)))
            return
        self._emit(task)
        if task.progress >= 100.0:
            task.output.append("Compressing all.zip")
            task.building = asyncio.get_running_loop().create_task(self._build(task, task.generation))

    def _fail(self, task: SimTask, now: float, message: str, lines: list[str]) -> None:
        task.output += lines
        task.processing_ms = task.processing_time(now)
        task.status, task.error_message, task.progress = TaskStatus.FAILED, message, 100.0
        log.warning("%s: task %s failed after %.1f s: %s", self._label, task.uuid[:8], task.processing_ms / 1000, message)

    async def _build(self, task: SimTask, generation: int) -> None:
        """Write the results and all.zip in a thread, then complete the task if its run still counts."""
        ctx = ResultContext(task.uuid, task.images, task.option_map, list(task.output),
                            self.settings.engine_version, self.settings.asset_kb)
        paths = task.outputs or default_outputs(ctx, task.skip_post_processing)
        part = self.data_root / f".{task.uuid}.{generation}.zip.part"
        try:
            await asyncio.to_thread(build_all_zip, task.project_dir, paths, ctx, part)
            current = task.generation == generation and task.uuid in self.tasks
            if current:
                os.replace(part, task.all_zip)
                task.processing_ms = task.processing_time(time.monotonic())
                task.status = TaskStatus.COMPLETED
                log.info("%s: task %s completed in %.1f s", self._label, task.uuid[:8], task.processing_ms / 1000)
        except Exception as exc:  # noqa: BLE001 - a task must never stay RUNNING because its zip failed
            log.exception("%s: task %s could not archive its results: %s", self._label, task.uuid[:8], exc)
            if task.generation == generation:
                self._fail(task, time.monotonic(), "Could not archive .zip file", [f"Could not archive .zip file: {exc}"])
        finally:
            part.unlink(missing_ok=True)
            task.building = None
        self._start_ready(time.monotonic())
