"""`passel submit IMAGES_DIR`: send a folder of images to the passel through PyODM, as WebODM would,
with progress bars for the upload, the processing and the download of the results."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.admin_client import add_api_flags

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".tif", ".tiff", ".png", ".dng"}
EXTRA_FILES = {"gcp_list.txt", "geo.txt", "image_groups.txt", "align.tif", "align.laz", "align.las"}  # read by name
BAR = "{desc:<12}{percentage:3.0f}%|{bar}| {elapsed}"


def add_submit_parser(sub: Any) -> None:
    submit = sub.add_parser("submit", help="process a folder of images on the passel, and download the results",
                            description="Upload the images of IMAGES_DIR through PyODM (with a progress bar), follow "
                                        "the task until it ends, then download and unpack its results.")
    submit.add_argument("images", metavar="IMAGES_DIR", help="a folder of images (plus gcp_list.txt, geo.txt, ...)")
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
    add_api_flags(submit, password=False)  # uploads go through the NodeODM API, which needs no admin password


def option_value(raw: str) -> Any:
    """'true' -> True, '5' -> 5, '2.5' -> 2.5, anything else stays text (as ODM's own CLI reads it)."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def parse_options(pairs: list[str], split: int | None, overlap: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--option needs NAME=VALUE, not {pair!r}")
        options[name.strip().lstrip("-")] = option_value(value.strip())
    if split is not None:
        options["split"] = split
    if overlap is not None:
        options["split-overlap"] = overlap
    return options


def find_images(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder of images")
    files = sorted(str(p) for p in folder.iterdir()
                   if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.name in EXTRA_FILES))
    if not any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
        raise SystemExit(f"No images (.jpg, .tif, .png, .dng) in {folder}")
    return files


def submit_command(args: argparse.Namespace) -> int:
    from pyodm import Node
    from pyodm.exceptions import NodeConnectionError, NodeResponseError
    from tqdm import tqdm

    folder = Path(args.images)
    files = find_images(folder)
    options = parse_options(args.option, args.split, args.split_overlap)
    name = args.name or folder.resolve().name
    address = urlsplit(args.api if "//" in args.api else f"http://{args.api}")
    node = Node(address.hostname or "127.0.0.1", address.port or 3000, token=args.token or "", timeout=60)
    print(f"Sending {len(files)} files from {folder} to {args.api} as {name!r}"
          + (f" with {', '.join(f'{k}={v}' for k, v in options.items())}" if options else ""), flush=True)
    try:
        with tqdm(total=100, desc="Uploading", unit="%", bar_format=BAR) as bar:
            task = node.create_task(files, options, name=name, parallel_uploads=args.parallel_uploads,
                                    progress_callback=lambda pct: _set(bar, pct))
            _set(bar, 100)
        print(f"Task {task.uuid} accepted. Watch it at {args.api.rstrip('/')}/ui/tasks/{task.uuid}", flush=True)
        if args.no_wait:
            return 0
        info = _follow(task, args.poll_seconds, tqdm)
        if info.status.name != "COMPLETED":
            tail = task.output(line=-10)
            print(f"Task {task.uuid} ended {info.status.name}: {info.last_error or 'see its output'}", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
            return 1
        output = Path(args.output or f"{name}-results")
        with tqdm(total=100, desc="Downloading", unit="%", bar_format=BAR) as bar:
            task.download_assets(str(output), progress_callback=lambda pct: _set(bar, pct), parallel_downloads=4)
            _set(bar, 100)
    except (NodeConnectionError, NodeResponseError) as exc:
        raise SystemExit(f"Passel at {args.api} refused or did not answer: {exc}") from None
    print(f"Done: results are in {output}/", flush=True)
    return 0


def _set(bar: Any, percent: float) -> None:
    bar.n = min(100.0, max(bar.n, round(float(percent), 1)))
    bar.refresh()


def _follow(task: Any, interval: float, tqdm: Any) -> Any:
    """Poll the task until it ends, with a processing bar and a line per status change."""
    last_status = None
    with tqdm(total=100, desc="Processing", unit="%", bar_format=BAR) as bar:
        while True:
            info = task.info()
            if info.status != last_status:
                bar.write(f"Status: {info.status.name}")
                last_status = info.status
            _set(bar, info.progress)
            if info.status.name in ("COMPLETED", "FAILED", "CANCELED"):
                return info
            time.sleep(interval)
