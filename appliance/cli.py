"""The `passel` command: run a box, a simulated node, the demo, and manage nodes."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from appliance import __version__
from appliance.admin_client import AdminClient, AdminError, add_api_flags
from appliance.cli_admin import add_admin_parsers, password_command, priority_command
from appliance.cli_key import add_key_parser, key_command
from appliance.cli_run import add_run_parsers, demo_command, run_command, simnode_command
from appliance.cli_submit import add_submit_parser, submit_command
from appliance.doctor import add_doctor_parser, doctor_command
from appliance.power import add_power_parsers, power_command

DESCRIPTION = """\
Passel turns the boxes of a field network into one OpenDroneMap processing node.

Every box runs `passel run`. Clients (ODM with --sm-cluster, WebODM, PyODM, curl) talk to port 3000
as if it were a single NodeODM; Passel stages the uploads, picks a node with a free slot, and keeps
track of every task in SQLite so nothing is lost when a box restarts.

Start here:
  passel demo                               a passel of 3 simulated nodes on this machine, with a sample job
  passel run --node http://10.0.0.5:3001    a coordinator in front of a real NodeODM
  passel nodes list                         what the coordinator knows about its nodes

Settings come from, in rising order: built-in defaults, a TOML file (--config, $PASSEL_CONFIG or
/etc/passel/passel.toml), PASSEL_* environment variables, then flags.
"""

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="passel", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"passel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_run_parsers(sub)

    status = sub.add_parser("status", help="the passel as one box sees it: boxes, nodes and tasks")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_api_flags(status)

    transfer = sub.add_parser("transfer", help="hand the coordinator role to another box, by id or name")
    transfer.add_argument("box", help="the box's id or friendly name (see `passel status`)")
    add_api_flags(transfer)

    add_key_parser(sub)

    tasks = sub.add_parser("tasks", help="list, show, move, cancel, restart or remove tasks")
    tasks.add_argument("action", choices=["list", "show", "move", "cancel", "restart", "remove"])
    tasks.add_argument("uuid", nargs="?", help="the task (a unique prefix is enough)")
    tasks.add_argument("node", nargs="?", help="for move: the node's id or URL")
    tasks.add_argument("--json", action="store_true", help="machine-readable output")
    add_api_flags(tasks)

    nodes = sub.add_parser("nodes", help="list, add, remove, lock or unlock the coordinator's nodes")
    nodes.add_argument("action", choices=["list", "add", "remove", "lock", "unlock", "best"])
    nodes.add_argument("target", nargs="?", help="a URL for add (http://host:port[?token=T]); an id or URL otherwise; "
                                                 "an image count for best")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_api_flags(nodes, what="Passel API")

    add_power_parsers(sub)
    add_submit_parser(sub)
    add_doctor_parser(sub)
    add_admin_parsers(sub)
    return parser


def _print_nodes(nodes: list[dict[str, Any]]) -> None:
    print(f"{'ID':>3}  {'URL':<32} {'STATE':<14} {'SLOTS':>7} {'CORES':>5} {'MAX IMG':>7}  SOURCE")
    for n in nodes:
        state = ("online" if n["online"] else "offline") + (", locked" if n["locked"] else "")
        print(f"{n['id']:>3}  {n['url']:<32} {state:<14} {n['active_tasks']:>3}/{n['slots']:<3} "
              f"{n['cores'] or '?':>5} {n['max_images'] or 'any':>7}  {n['source']}")


def _nodes_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    if args.action != "list" and not args.target:
        raise SystemExit(f"passel nodes {args.action} needs a target")
    if args.action == "list":
        result = client.call("GET", "/-/nodes")
    elif args.action == "add":
        result = client.call("POST", "/-/nodes", {"url": args.target})
    elif args.action == "remove":
        result = client.call("DELETE", f"/-/nodes/{urllib.parse.quote(args.target, safe='')}")
    elif args.action == "best":
        result = client.call("GET", "/-/nodes/best", params={"images": args.target})
    else:
        result = client.call("POST", f"/-/nodes/{urllib.parse.quote(args.target, safe='')}/{args.action}")
    if args.json or args.action in ("remove", "best"):
        print(json.dumps(result, indent=2))
    else:
        _print_nodes(result if isinstance(result, list) else [result])
    return 0


def _status_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    passel = client.call("GET", "/-/passel.json")
    cluster = client.call("GET", "/-/status.json")
    if args.json:
        print(json.dumps(passel | {"nodes": cluster["nodes"], "tasks": cluster["tasks"]}, indent=2))
        return 0
    print(f"Passel seen from {passel['self']['name']} ({passel['self']['id']}), term {passel['term']}")
    print(f"\n{'BOX':<20} {'ID':<13} {'ROLE':<12} {'ADDRESS':<16} STATE")
    for box in passel["boxes"]:
        state = "this box" if box["self"] else ("alive" if box["alive"] else "not heard from")
        print(f"{box['name']:<20} {box['id']:<13} {box['role']:<12} {box['address'] or '-':<16} {state}")
    print()
    _print_nodes(cluster["nodes"])
    counts: dict[str, int] = {}
    for task in cluster["tasks"]:
        counts[task["status_name"]] = counts.get(task["status_name"], 0) + 1
    print("\nTasks: " + (", ".join(f"{n} {name.lower()}" for name, n in sorted(counts.items())) or "none"))
    return 0


def _transfer_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    passel = client.call("GET", "/-/passel.json")
    match = [b for b in passel["boxes"] if args.box in (b["id"], b["name"])]
    if len(match) != 1:
        raise SystemExit(f"No single box named {args.box!r}; boxes: {', '.join(b['name'] for b in passel['boxes'])}")
    result = client.call("POST", "/-/transfer", {"to": match[0]["id"]})
    print(f"{match[0]['name']} is now the coordinator (term {result['term']})")
    return 0


def _tasks_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    listing = client.call("GET", "/-/tasks")
    if args.action == "list":
        if args.json:
            print(json.dumps(listing, indent=2))
            return 0
        print(f"{'TASK':<10} {'NAME':<28} {'STATUS':<10} {'PROGRESS':>8} {'IMAGES':>6}  NODE")
        for t in listing:
            print(f"{t['uuid'][:8]:<10} {t['name'][:28]:<28} {t['status_name']:<10} {t['progress']:>7.0f}% "
                  f"{t['images_count']:>6}  {t['node_url'] or '-'}")
        return 0
    if not args.uuid:
        raise SystemExit(f"passel tasks {args.action} needs a task uuid")
    matches = [t["uuid"] for t in listing if t["uuid"].startswith(args.uuid.lower())]
    if len(matches) != 1:
        raise SystemExit(f"{'No task' if not matches else 'More than one task'} matches {args.uuid!r}")
    uuid = matches[0]
    if args.action == "show":
        print(json.dumps(client.call("GET", f"/-/tasks/{uuid}"), indent=2))
        return 0
    if args.action == "move" and not args.node:
        raise SystemExit("passel tasks move needs a node: passel tasks move UUID NODE")
    result = client.call("POST", f"/-/tasks/{uuid}/{args.action}", {"node": args.node} if args.node else {})
    print(f"Task {uuid[:8]}: {args.action} done" + (f", now going to {result['node']}" if "node" in result else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"run": run_command, "simnode": simnode_command, "demo": demo_command, "nodes": _nodes_command,
                "status": _status_command, "transfer": _transfer_command, "tasks": _tasks_command, "key": key_command,
                "sleep": power_command, "wake": power_command, "submit": submit_command, "doctor": doctor_command,
                "password": password_command, "priority": priority_command}
    if args.command not in handlers:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except AdminError as exc:  # the one line a field technician reads, instead of a traceback
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
