"""`passel nodes`: list, add, remove, lock or unlock the coordinator's nodes, and ask which one would
take a task of N images now; tables and sentences for people, JSON behind --json for scripts."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from appliance.admin_client import AdminClient, add_api_flags
from webui import format as fmt


def add_nodes_parser(sub: Any) -> None:
    nodes = sub.add_parser("nodes", help="list, add, remove, lock or unlock the coordinator's nodes")
    nodes.add_argument("action", choices=["list", "add", "remove", "lock", "unlock", "best"])
    nodes.add_argument("target", nargs="?", help="a URL for add (http://host:port[?token=T]); an id or URL otherwise; "
                                                 "an image count for best")
    nodes.add_argument("--upstream", action="store_true",
                       help="with add: the node is beyond the site (a cloud NodeODM or ClusterODM over an uplink); "
                            "it gets only the tasks it finishes sooner, counting the time the images take to go up "
                            "and the results to come home, and only while it answers")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_api_flags(nodes, what="Passel API")


def node_name(node: dict[str, Any]) -> str:
    """The node's label when it has one of its own, else its URL."""
    return str(node.get("label") or node["url"])


def print_nodes(nodes: list[dict[str, Any]]) -> None:
    print(f"{'ID':>3}  {'URL':<32} {'STATE':<14} {'SLOTS':>7} {'CORES':>5} {'MAX IMG':>7}  SOURCE")
    for n in nodes:
        state = ("online" if n["online"] else "offline") + (", locked" if n["locked"] else "")
        print(f"{n['id']:>3}  {n['url']:<32} {state:<14} {n['active_tasks']:>3}/{n['slots']:<3} "
              f"{n['cores'] or '?':>5} {n['max_images'] or 'any':>7}  {n['source']}")
        if n.get("upstream"):
            print(f"     upstream, link {n['link']}")


def _facts(node: dict[str, Any]) -> str:
    memory = fmt.size(node["total_memory"]) if node.get("total_memory") else "? memory"
    return f"{node.get('cores') or '?'} cores, {memory}, {node['active_tasks']}/{node['slots']} slots busy"


def _print_best(images: str, answer: dict[str, Any], nodes: dict[int, dict[str, Any]]) -> None:
    """Which node a task of `images` images would go to now, the others in order, and why the rest cannot."""
    def line(node_id: int | str, text: str) -> str:
        node = nodes.get(int(node_id))
        return f"  {node_id:>3}  {node_name(node) if node else '?':<36} {text}"

    best = nodes.get(answer["best"]) if answer.get("best") is not None else None
    if best:
        print(f"A task of {images} images would go to node {best['id']} ({node_name(best)}) now.")
    else:
        print(f"No node can take a task of {images} images now; it would wait for one.")
    if answer["ranking"]:
        print("Nodes that can take it, best first:")
        for node_id in answer["ranking"]:
            print(line(node_id, _facts(nodes[node_id]) if node_id in nodes else ""))
    if answer["refused"]:
        print("Nodes that cannot take it now:")
        for node_id, reason in answer["refused"].items():
            print(line(node_id, reason))


def _find(nodes: list[dict[str, Any]], ref: str) -> dict[str, Any] | None:
    return next((n for n in nodes if ref in (str(n["id"]), n["url"])), None)


def nodes_command(args: argparse.Namespace) -> int:
    if args.upstream and args.action != "add":
        raise SystemExit("--upstream goes with add: passel nodes add --upstream https://cloud.example.org:3000")
    if args.action != "list" and not args.target:
        example = {"add": "http://10.0.0.5:3001", "best": "120"}.get(args.action, "1")
        raise SystemExit(f"passel nodes {args.action} needs a target, e.g. passel nodes {args.action} {example}")
    if args.action == "best" and not args.target.isdigit():
        raise SystemExit(f"passel nodes best needs an image count (a whole number), not {args.target!r}")
    client = AdminClient.from_args(args)
    ref = urllib.parse.quote(args.target or "", safe="")
    if args.action == "list":
        result = client.call("GET", "/-/nodes")
    elif args.action == "add":
        result = client.call("POST", "/-/nodes", {"url": args.target, "upstream": args.upstream})
    elif args.action == "remove":
        known = None if args.json else _find(client.call("GET", "/-/nodes"), args.target)
        result = client.call("DELETE", f"/-/nodes/{ref}")
        if not args.json:
            print(f"Removed node {result['id']}" + (f" ({node_name(known)})." if known else "."))
            return 0
    elif args.action == "best":
        result = client.call("GET", "/-/nodes/best", params={"images": args.target})
        if not args.json:
            _print_best(args.target, result, {n["id"]: n for n in client.call("GET", "/-/nodes")})
            return 0
    else:
        result = client.call("POST", f"/-/nodes/{ref}/{args.action}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_nodes(result if isinstance(result, list) else [result])
    return 0
