"""`passel tasks`: list, show, move, cancel, restart or remove the passel's tasks, by a unique prefix of
their id; what a person reads (status names, local times, durations, node names), or JSON with --json."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from appliance.admin_client import AdminClient, add_api_flags
from appliance.cli_nodes import node_name
from webui import format as fmt

FINISHED = ("COMPLETED", "FAILED", "CANCELED")
PHASES = {"waiting": "waiting for a free node", "forwarding": "being sent to its node"}


def add_tasks_parser(sub: Any) -> None:
    tasks = sub.add_parser("tasks", help="list, show, move, cancel, restart or remove tasks")
    tasks.add_argument("action", choices=["list", "show", "move", "cancel", "restart", "remove"])
    tasks.add_argument("uuid", nargs="?", help="the task (a unique prefix is enough)")
    tasks.add_argument("node", nargs="?", help="for move: the node's id or URL")
    tasks.add_argument("--json", action="store_true", help="machine-readable output")
    add_api_flags(tasks)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _elapsed(task: dict[str, Any], now: float) -> float:
    """From acceptance (or creation) to the end, or to now while it runs; as the web UI counts it."""
    start = task["committed_at"] or task["date_created"] / 1000
    end = task["finished_at"] if task["status_name"] in FINISHED and task["finished_at"] else now
    return max(0.0, end - start)


def print_task(task: dict[str, Any], labels: dict[str, str]) -> None:
    """One task as the web UI's task page shows it, then its events, oldest first."""
    finished = task["status_name"] in FINISHED
    note = "" if finished else PHASES.get(task["phase"], "")
    facts = [
        ("Task", f"{task['uuid']}  {task['name']!r}"),
        ("Status", f"{task['status_name']}, {task['progress']:.0f}%" + (f" ({note})" if note else "")),
        ("Images", str(task["images_count"])),
        ("Node", labels.get(task["node_url"] or "", task["node_url"] or "none yet")),
        ("Created", fmt.clock(task["date_created"] / 1000)),
        ("Accepted", fmt.clock(task["committed_at"])),
        ("Finished", fmt.clock(task["finished_at"]) if finished else "not yet"),
        ("Elapsed", fmt.duration(_elapsed(task, time.time()))),
        ("On its node", fmt.duration(task["processing_time"] / 1000) if task["processing_time"] > 0 else "—"),
        ("Time left", f"about {fmt.duration(task['eta_seconds'])}" if task["eta_seconds"] and not finished else "—"),
        ("Sent", f"{task['attempts']} time(s)"),
        ("Options", ", ".join(f"{o['name']}={_value(o['value'])}" for o in task["options"]) or "the defaults"),
    ]
    error = task["error_message"] or task["last_error"]
    if error:
        facts.append(("Error", error))
    for label, text in facts:
        print(f"{label + ':':<13}{text}")
    if task.get("events"):
        print("\nEvents, oldest first:")
        for event in sorted(task["events"], key=lambda e: e["at"]):
            print(f"  {fmt.clock(event['at']):<17} {event['kind']:<12} {event['message']}")


def _print_list(listing: list[dict[str, Any]]) -> None:
    print(f"{'TASK':<10} {'NAME':<28} {'STATUS':<10} {'PROGRESS':>8} {'IMAGES':>6}  NODE")
    for t in listing:
        print(f"{t['uuid'][:8]:<10} {t['name'][:28]:<28} {t['status_name']:<10} {t['progress']:>7.0f}% "
              f"{t['images_count']:>6}  {t['node_url'] or '-'}")


def tasks_command(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.uuid:
        raise SystemExit(f"passel tasks {args.action} needs a task id (a unique prefix is enough); "
                         "see `passel tasks list`")
    if args.action == "move" and not args.node:
        raise SystemExit("passel tasks move needs a node: passel tasks move TASK NODE (see `passel nodes list`)")
    client = AdminClient.from_args(args)
    listing = client.call("GET", "/-/tasks")
    if args.action == "list":
        if args.json:
            print(json.dumps(listing, indent=2))
        else:
            _print_list(listing)
        return 0
    matches = [t["uuid"] for t in listing if t["uuid"].startswith(args.uuid.lower())]
    if len(matches) != 1:
        raise SystemExit(f"No task matches {args.uuid!r}; see `passel tasks list`" if not matches else
                         f"More than one task starts with {args.uuid!r}: give more of its id")
    uuid = matches[0]
    if args.action == "show":
        task = client.call("GET", f"/-/tasks/{uuid}")
        if args.json:
            print(json.dumps(task, indent=2))
        else:
            print_task(task, {n["url"]: node_name(n) for n in client.call("GET", "/-/nodes")})
        return 0
    result = client.call("POST", f"/-/tasks/{uuid}/{args.action}", {"node": args.node} if args.node else {})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Task {uuid[:8]}: {args.action} done" + (f", now going to {result['node']}" if "node" in result else ""))
    return 0
