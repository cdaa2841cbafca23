"""`passel submit IMAGES_DIR`: send a folder of images to the passel through PyODM, as WebODM would,
with progress bars for the upload, the processing and the download of the results.

Options are checked against the nodes' own list before any image goes up. Network blips are waited
out (--patience); when the passel stays silent, or Ctrl-C stops the wait, the task goes on on the
passel and `passel submit --follow TASK` picks it up again."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.admin_client import add_api_flags, api_url, network_reason, origin
from appliance.cli_download import add_patience_flag
from appliance.cli_options import check_options, parse_pairs
from appliance.nodeodm.options import OptionSpec

if TYPE_CHECKING:
    from pyodm import Task

    from appliance.cli_pyodm import PatientNode

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".tif", ".tiff", ".png", ".dng"}
EXTRA_FILES = {"gcp_list.txt", "geo.txt", "image_groups.txt", "align.tif", "align.laz", "align.las"}  # read by name
STOPPED = 130  # the exit code of a program stopped by Ctrl-C


def add_submit_parser(sub: Any) -> None:
    submit = sub.add_parser("submit", help="process a folder of images on the passel, and download the results",
                            description="Upload the images of IMAGES_DIR through PyODM (with a progress bar), follow "
                                        "the task until it ends, then download and unpack its results. "
                                        "With --follow TASK, pick up a task sent before instead.")
    submit.add_argument("images", metavar="IMAGES_DIR", nargs="?",
                        help="a folder of images (plus gcp_list.txt, geo.txt, ...)")
    submit.add_argument("--follow", default=None, metavar="TASK",
                        help="follow a task sent before until it ends, then download its results")
    submit.add_argument("--split", type=int, default=None, metavar="N",
                        help="split-merge: about N images per submodel, spread across the passel's nodes")
    submit.add_argument("--split-overlap", type=int, default=None, metavar="METERS", help="overlap of the submodels")
    submit.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="an ODM option, e.g. --option dsm=true --option orthophoto-resolution=5; repeat")
    submit.add_argument("--name", default=None, help="the task's name (default: the folder's name)")
    submit.add_argument("--output", default=None, metavar="DIR", help="where results go (default: NAME-results)")
    submit.add_argument("--no-wait", action="store_true", help="upload, print the task's id, and return")
    submit.add_argument("--poll-seconds", type=float, default=2.0, help="how often to check progress")
    submit.add_argument("--parallel-uploads", type=int, default=4, help="uploads at once (PyODM's chunked upload)")
    add_patience_flag(submit)
    add_api_flags(submit, password=False)  # uploads go through the NodeODM API, which needs no admin password


def find_images(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise SystemExit(f"There is no folder at {folder}: give the folder that holds the flight's images")
    files = sorted(str(p) for p in folder.iterdir()
                   if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.name in EXTRA_FILES))
    if not any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
        raise SystemExit(f"No images (.jpg, .tif, .png, .dng) in {folder}")
    return files


def _wanted_options(args: argparse.Namespace) -> dict[str, str]:
    given = parse_pairs(args.option)
    given |= {"split": str(args.split)} if args.split is not None else {}
    return given | ({"split-overlap": str(args.split_overlap)} if args.split_overlap is not None else {})


def _pick_up_hint(uuid: str, api: str) -> str:
    return (f"task {uuid} goes on on the passel: pick it up again with `passel submit --follow {uuid} "
            f"--api {origin(api)}`, or fetch its results once done with `passel download {uuid} --api {origin(api)}`")


def submit_command(args: argparse.Namespace) -> int:
    from pyodm.exceptions import NodeConnectionError, OdmError

    from appliance.cli_pyodm import GaveUp, PatientNode

    if bool(args.images) == bool(args.follow):
        raise SystemExit("passel submit needs a folder of images (passel submit IMAGES_DIR), or --follow TASK "
                         "to pick up a task sent before, but not both")
    files = find_images(Path(args.images)) if args.images else []
    wanted = _wanted_options(args)
    api = api_url(args.api)
    node = PatientNode(api, args.token or "", args.patience)
    task: Task | None = None
    try:
        if args.follow:
            task = node.find_task(args.follow)
            name = task.info().name or task.uuid[:8]
        else:
            name = args.name or Path(args.images).resolve().name
            options = check_options(wanted, [OptionSpec.from_json(o) for o in node.listing("/options")], api)
            task = _upload(node, files, options, name, args)
        if args.no_wait:
            return 0
        return _follow_and_download(task, name, args)
    except KeyboardInterrupt:
        if task is not None:
            print(f"Stopped following; {_pick_up_hint(task.uuid, api)}.", file=sys.stderr)
        else:
            print("Stopped" + ("." if args.follow else ": nothing was sent; run the same command again to start "
                                                         "over."), file=sys.stderr)
        return STOPPED
    except (GaveUp, NodeConnectionError) as exc:  # the latter: PyODM's own retries of a file ran out
        silent = f"The passel at {origin(api)} stopped answering for {args.patience:.0f} s ({network_reason(exc)})"
        if task is None:
            raise SystemExit(f"{silent}; nothing was submitted: run the same command again when it answers.") from None
        raise SystemExit(f"{silent}; {_pick_up_hint(task.uuid, api)}.") from None
    except OdmError as exc:
        raise SystemExit(f"The passel at {origin(api)} refused: {exc}") from None


def _upload(node: PatientNode, files: list[str], options: list[dict[str, Any]], name: str,
            args: argparse.Namespace) -> Task:
    shown = ", ".join(f"{o['name']}={json.dumps(o['value']) if not isinstance(o['value'], str) else o['value']}"
                      for o in options)
    print(f"Sending {len(files)} files from {args.images} to {origin(node.api)} as {name!r}"
          + (f" with {shown}" if options else ""), flush=True)
    task = node.upload(files, {o["name"]: o["value"] for o in options}, name, args.parallel_uploads)
    print(f"Task {task.uuid} accepted. Watch it at {origin(node.api)}/ui/tasks/{task.uuid}", flush=True)
    return task


def _follow_and_download(task: Task, name: str, args: argparse.Namespace) -> int:
    from appliance.cli_pyodm import download_results, follow

    info = follow(task, args.poll_seconds)
    if info.status.name != "COMPLETED":
        print(f"Task {task.uuid} ended {info.status.name}: {info.last_error or 'see its output below'}",
              file=sys.stderr)
        print("\n".join(task.output(line=-10)), file=sys.stderr)
        return 1
    output = Path(args.output or f"{name}-results")
    download_results(task, output, args.patience)
    print(f"Done: results are in {output}/", flush=True)
    return 0
