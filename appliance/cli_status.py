"""`passel status` and `passel transfer`: the passel as one box sees it, and handing the coordinator
role to another box. A box with discovery off has no passel around it: status shows what it has
(this box, its nodes and tasks) and says so, and transfer says there is no one to hand the role to."""

from __future__ import annotations

import argparse
import json
from typing import Any

from appliance.admin_client import BOX_PATH, AdminClient, Refused, add_api_flags, origin
from appliance.cli_nodes import print_nodes

DISCOVERY_OFF = "discovery is off, so it works alone with the nodes below"


def add_status_parsers(sub: Any) -> None:
    status = sub.add_parser("status", help="the passel as one box sees it: boxes, nodes and tasks")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_api_flags(status)

    transfer = sub.add_parser("transfer", help="hand the coordinator role to another box, by id or name")
    transfer.add_argument("box", help="the box's id or friendly name (see `passel status`)")
    add_api_flags(transfer)


def passel_view(client: AdminClient) -> dict[str, Any] | None:
    """The passel as the box sees it, or None when its discovery is off (it then has no /-/passel.json)."""
    try:
        return client.call("GET", "/-/passel.json")
    except Refused as exc:
        if exc.status == 404:
            return None
        raise


def status_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    cluster = client.call("GET", "/-/status.json")
    passel = passel_view(client)
    box = client.call("GET", BOX_PATH) if passel is None else passel["self"]
    if args.json:
        view = passel if passel is not None else {"self": box}
        print(json.dumps(view | {"discovery": passel is not None, "nodes": cluster["nodes"],
                                 "tasks": cluster["tasks"]}, indent=2))
        return 0
    if passel is None:
        print(f"Box {box['name']} ({box['id']}) at {origin(client.api)}: {DISCOVERY_OFF}.")
    else:
        print(f"Passel seen from {box['name']} ({box['id']}), term {passel['term']}")
        print(f"\n{'BOX':<20} {'ID':<13} {'ROLE':<12} {'ADDRESS':<16} STATE")
        for b in passel["boxes"]:
            state = "this box" if b["self"] else ("alive" if b["alive"] else "not heard from")
            print(f"{b['name']:<20} {b['id']:<13} {b['role']:<12} {b['address'] or '-':<16} {state}")
    print()
    print_nodes(cluster["nodes"])
    counts: dict[str, int] = {}
    for task in cluster["tasks"]:
        counts[task["status_name"]] = counts.get(task["status_name"], 0) + 1
    print("\nTasks: " + (", ".join(f"{n} {name.lower()}" for name, n in sorted(counts.items())) or "none"))
    return 0


def transfer_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    passel = passel_view(client)
    if passel is None:
        raise SystemExit(f"The box at {origin(client.api)} has discovery off: it works alone, so there is no "
                         "other box to hand the coordinator role to.")
    match = [b for b in passel["boxes"] if args.box in (b["id"], b["name"])]
    if len(match) != 1:
        raise SystemExit(f"No single box named {args.box!r}; the boxes are: "
                         f"{', '.join(b['name'] for b in passel['boxes'])}")
    result = client.call("POST", "/-/transfer", {"to": match[0]["id"]})
    print(f"{match[0]['name']} is now the coordinator (term {result['term']})")
    return 0
