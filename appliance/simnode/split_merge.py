"""The simulated node as ODM's split-merge executor, so a split job can be tested without ODM.

A real node given `split` (images per submodel) and `sm-cluster` (a NodeODM URL, usually the passel)
cuts the images into submodels and sends each back to `sm-cluster` as a NodeODM task, through PyODM:
first a reconstruction round (partial `outputs`, `skipPostProcessing`), then a toolchain round; each
submodel's all.zip is downloaded and the remote task removed. This module does the same, as the
traces in the shared folder show it (an empty name, `seed.zip`, `geo.txt` and `gcp_list.txt` beside
the images), with two simplifications: images are cut in order rather than by their GPS positions
(a simulated image has none), and a submodel the passel keeps QUEUED is waited for instead of being
run here (the passel queues it until a node is free).
"""

from __future__ import annotations

import asyncio
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyodm import Node
from pyodm.exceptions import NodeConnectionError, NodeServerError, OdmError
from pyodm.types import TaskStatus as RemoteStatus

from appliance.nodeodm.options import OptionValue
from appliance.nodeodm.sentences import host_port

log = logging.getLogger("passel.simnode")

# the parent's options that only make sense for the parent (ODM drops them from submodels too)
PARENT_ONLY = frozenset({"split", "split-overlap", "split-image-groups", "sm-cluster", "sm-no-align", "merge",
                         "rerun", "rerun-all", "rerun-from"})
ROUNDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reconstruction", ("opensfm/matches", "opensfm/features", "opensfm/reconstruction.json", "opensfm/tracks.csv",
                        "cameras.json")),
    ("toolchain", ("odm_orthophoto/cutline.gpkg", "odm_orthophoto/odm_orthophoto_cut.tif",
                   "odm_orthophoto/odm_orthophoto_feathered.tif", "odm_dem", "odm_report", "odm_georeferencing")),
)
SIDE_FILES = ("geo.txt", "gcp_list.txt")  # copied from the parent's gcp/ folder when it has them
POLL_SECONDS = 0.5
MAX_POLLS = 7200  # one round of one submodel gives up after about an hour of polling
MAX_ERRORS = 10  # calls in a row that fail to reach the passel before the submodel counts as failed
REQUEST_TIMEOUT = 30
MERGE_SHARE = 0.95  # the parent's progress when every submodel is back; the merge makes the rest


class SubmodelFailed(Exception):
    """A submodel failed or could not be followed: the message is the parent's error, one sentence."""


@dataclass(frozen=True)
class SplitPlan:
    """Where the submodels go, and which images each one gets."""

    cluster_url: str
    groups: list[list[str]]


def plan_split(options: dict[str, OptionValue], images: list[str]) -> SplitPlan | None:
    """A plan when the task asks to be split and has more images than one submodel takes; else None."""
    cluster, split = options.get("sm-cluster"), options.get("split")
    if not isinstance(cluster, str) or not cluster.startswith(("http://", "https://")):
        return None
    try:
        size = int(split)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if size < 1 or len(images) <= size:
        return None
    return SplitPlan(cluster, [images[i:i + size] for i in range(0, len(images), size)])


@dataclass(frozen=True)
class Parent:
    """What the executor may do to the task it runs for: the engine's callbacks, which drop what
    arrives after the run was canceled or restarted."""

    say: Callable[[str], None]
    set_progress: Callable[[float], None]


def _seed(path: Path, kind: str) -> None:
    """ODM's seed.zip carries what the submodel's run starts from; here, a marker of the round."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"opensfm/split_merge_{kind}.txt", "")


def _side_files(project_dir: Path, images: list[str], folder: Path) -> list[Path]:
    """The parent's geo.txt (only this submodel's lines, after the projection line) and gcp_list.txt."""
    made = []
    for name in SIDE_FILES:
        source = project_dir / "gcp" / name
        if not source.is_file():
            continue
        lines = source.read_text(errors="replace").splitlines()
        if name == "geo.txt" and lines:
            mine = set(images)
            lines = lines[:1] + [line for line in lines[1:] if line.split()[:1] and line.split()[0] in mine]
        target = folder / name
        target.write_text("\n".join(lines) + "\n")
        made.append(target)
    return made


class SplitMerge:
    """Runs one parent's submodels on `sm-cluster`, round after round; `run` raises SubmodelFailed."""

    def __init__(self, plan: SplitPlan, project_dir: Path, options: dict[str, OptionValue], parent: Parent,
                 label: str) -> None:
        self.plan, self.project_dir, self.parent, self.label = plan, project_dir, parent, label
        self.options = {k: v for k, v in options.items() if k not in PARENT_ONLY}
        self.node = Node.from_url(plan.cluster_url, timeout=REQUEST_TIMEOUT)
        self.where = host_port(plan.cluster_url)
        self._uploads = asyncio.Lock()  # ODM sends one submodel's files at a time
        self._fractions: list[float] = []
        self._round = 0
        self._open: dict[int, asyncio.Task[Any]] = {}  # submodel index -> its send (a PyODM task), until removed

    async def run(self) -> None:
        count = len(self.plan.groups)
        self.parent.say(f"Splitting {sum(map(len, self.plan.groups))} images into {count} submodels; "
                        f"each is sent to the passel at {self.where}")
        try:
            for round_index, (kind, outputs) in enumerate(ROUNDS):
                self._round, self._fractions = round_index, [0.0] * count
                async with asyncio.TaskGroup() as group:
                    for index in range(count):
                        group.create_task(self._one(index, kind, outputs))
        except* SubmodelFailed as failures:
            raise failures.exceptions[0] from None
        finally:
            await self._remove_open()
        self.parent.say(f"All {count} submodels are back; merging them")

    async def _one(self, index: int, kind: str, outputs: tuple[str, ...]) -> None:
        count = len(self.plan.groups)
        title = f"Submodel {index + 1} of {count}"
        folder = self.project_dir / "submodels" / f"submodel_{index:04d}" / kind
        async with self._uploads:
            files = await asyncio.to_thread(self._files, index, kind, folder)
            # a cancel lets the send finish (its thread cannot be stopped), so the task can then be removed
            sending = self._open[index] = asyncio.create_task(self._call(
                title, self.node.create_task, [str(f) for f in files], self.options,
                skip_post_processing=True, outputs=list(outputs)))
            remote = await asyncio.shield(sending)
        self.parent.say(f"{title} ({kind}) sent to the passel: task {remote.uuid[:8]}")
        await self._follow(title, index, remote)
        await self._call(title, remote.download_zip, str(folder))
        await self._call(title, remote.remove)
        self._open.pop(index, None)
        self._fractions[index] = 1.0
        self._progress()
        self.parent.say(f"{title} done on the passel ({kind})")

    def _files(self, index: int, kind: str, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        seed = folder / "seed.zip"
        _seed(seed, kind)
        images = self.plan.groups[index]
        return [*(self.project_dir / "images" / name for name in images), seed,
                *_side_files(self.project_dir, images, folder)]

    async def _follow(self, title: str, index: int, remote: Any) -> None:
        """Poll until it completes; a failure or cancel ends the parent with the submodel's last words."""
        for _ in range(MAX_POLLS):
            info = await self._call(title, remote.info)
            if info.status == RemoteStatus.COMPLETED:
                return
            if info.status in (RemoteStatus.FAILED, RemoteStatus.CANCELED):
                lines = await self._call(title, remote.output, -3)
                why = next((line for line in reversed(lines) if line.strip()), info.last_error or "no reason given")
                state = "failed" if info.status == RemoteStatus.FAILED else "was canceled"
                raise SubmodelFailed(f"{title} {state} on the passel (task {remote.uuid[:8]}): {why.strip()}")
            self._fractions[index] = max(0.0, min(info.progress, 100.0)) / 100.0
            self._progress()
            await asyncio.sleep(POLL_SECONDS)
        raise SubmodelFailed(f"{title} did not finish on the passel within {MAX_POLLS * POLL_SECONDS / 60:.0f} minutes")

    async def _call(self, title: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One PyODM call in a thread, tried again while the passel cannot be reached or answers with a
        server error, up to MAX_ERRORS times."""
        for attempt in range(1, MAX_ERRORS + 1):
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except (NodeConnectionError, NodeServerError) as exc:
                if attempt == MAX_ERRORS:
                    raise SubmodelFailed(f"{title} could not be followed on the passel at {self.where}: {exc}") from None
                log.info("%s: %s: %s (try %d of %d)", self.label, title, exc, attempt, MAX_ERRORS)
                await asyncio.sleep(POLL_SECONDS * attempt)
            except OdmError as exc:  # an answer, such as a refused token: asking again changes nothing
                raise SubmodelFailed(f"{title} was refused by the passel at {self.where}: {exc}") from None
        raise AssertionError("unreachable")

    def _progress(self) -> None:
        done = (self._round + sum(self._fractions) / len(self._fractions)) / len(ROUNDS)
        self.parent.set_progress(100.0 * MERGE_SHARE * done)

    async def _remove_open(self) -> None:
        """Submodels still on the passel when the run ends early (a failure, a cancel) are removed."""
        for index, sending in list(self._open.items()):
            try:
                remote = await sending
                await asyncio.shield(asyncio.to_thread(remote.remove))
            except (OdmError, SubmodelFailed) as exc:
                log.info("%s: could not remove submodel %d from the passel: %s", self.label, index + 1, exc)
        self._open.clear()
