"""`passel download TASK`: fetch and unpack the results (all.zip) of a completed task, e.g. after
`passel submit` stopped following it. It speaks NodeODM's API through PyODM, as submit does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.admin_client import add_api_flags, api_url, origin

DEFAULT_PATIENCE_SECONDS = 120.0


def add_patience_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patience", type=float, default=DEFAULT_PATIENCE_SECONDS, metavar="SECONDS",
                        help="how long to keep trying when the passel stops answering, before giving up "
                             f"(default {DEFAULT_PATIENCE_SECONDS:.0f})")


def add_download_parser(sub: Any) -> None:
    download = sub.add_parser("download", help="download and unpack the results of a completed task",
                              description="Download the results (all.zip) of a completed task and unpack them.")
    download.add_argument("task", metavar="TASK", help="the task's id (a unique prefix is enough)")
    download.add_argument("--output", default=None, metavar="DIR",
                          help="where results go (default: the task's name, then -results)")
    add_patience_flag(download)
    add_api_flags(download, password=False)  # NodeODM's API, which needs no admin password


def download_command(args: argparse.Namespace) -> int:
    from pyodm.exceptions import OdmError

    from appliance.cli_pyodm import GaveUp, PatientNode, download_results

    api = api_url(args.api)
    node = PatientNode(api, args.token or "", args.patience)
    try:
        task = node.find_task(args.task)
        info = task.info()
        if info.status.name in ("QUEUED", "RUNNING"):
            raise SystemExit(f"Task {task.uuid} is {info.status.name} ({info.progress:.0f}%) and has no results "
                             f"yet: follow it with `passel submit --follow {task.uuid}`, or try again later.")
        if info.status.name != "COMPLETED":
            raise SystemExit(f"Task {task.uuid} ended {info.status.name} and has no results"
                             + (f": {info.last_error}" if info.last_error else "."))
        output = Path(args.output or f"{info.name or task.uuid[:8]}-results")
        download_results(task, output, args.patience)
    except GaveUp as exc:
        raise SystemExit(f"The passel at {origin(api)} stopped answering for {args.patience:.0f} s ({exc}); "
                         "run the same command again when it answers.") from None
    except OdmError as exc:
        raise SystemExit(f"The passel at {origin(api)} refused: {exc}") from None
    print(f"Done: results of task {task.uuid} are in {output}/", flush=True)
    return 0
