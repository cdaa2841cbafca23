"""The `passel` command: run a box, a simulated node, the demo, and manage nodes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
import urllib.parse
from typing import Any

from appliance import __version__
from appliance.admin_client import AdminClient, AdminError, add_api_flags
from appliance.cli_admin import add_admin_parsers, password_command, priority_command
from appliance.cli_key import add_key_parser, key_command
from appliance.cli_submit import add_submit_parser, submit_command
from appliance.config import ConfigError, add_setting_flags, load_config
from appliance.doctor import add_doctor_parser, doctor_command
from appliance.logs import setup_logging
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

RUN_SETTINGS = ("host", "port", "state_dir", "node", "token", "public_url", "discovery", "name", "priority",
                "share", "key", "alias", "poll_seconds", "grace_seconds", "stall_seconds", "staging_keep_hours",
                "task_poll_seconds", "dispatch_attempts", "speed_aware", "min_free_disk_mb", "log_level")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="passel", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"passel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run this box's agent and coordinator (the systemd service runs this)",
                         description="Serve the NodeODM-compatible API and the web UI for the passel.")
    run.add_argument("--config", metavar="FILE", help="TOML file of settings (keys as the flags, with underscores)")
    add_setting_flags(run, RUN_SETTINGS)
    run.add_argument("--first-boot", action="store_true",
                     help="create what a new box needs when missing: /etc/passel/passel.toml with every setting "
                          "commented out, and the state directory (passel.service passes this)")

    sim = sub.add_parser("simnode", help="run a simulated NodeODM, for demos, training and tests",
                         description="A NodeODM look-alike that 'processes' images in seconds_per_image each "
                                     "and returns plausible outputs. Faults can be injected.")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=3001, help="port to listen on (default 3001)")
    sim.add_argument("--max-images", type=int, default=None, help="largest task accepted (default: no limit)")
    sim.add_argument("--slots", type=int, default=1, help="tasks processed at once (maxParallelTasks)")
    sim.add_argument("--cores", type=int, default=4, help="CPU cores to report")
    sim.add_argument("--memory-mb", type=int, default=8192, help="memory to report, in MB")
    sim.add_argument("--seconds-per-image", type=float, default=0.5, help="simulated processing speed")
    sim.add_argument("--token", default=None, help="require ?token=T like NodeODM --token")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share of tasks that fail (0-1)")
    sim.add_argument("--drop-upload-rate", type=float, default=0.0, help="share of uploads dropped (0-1)")
    sim.add_argument("--stall-at", type=float, default=None, help="progress %% at which every task stalls")
    sim.add_argument("--data-dir", default=None, help="where task files go (default: a temporary directory)")
    sim.add_argument("--name", default="simnode", help="name shown in logs")
    sim.add_argument("--engine", default="odm", help="engine to report (odm, micmac, ...)")
    sim.add_argument("--engine-version", default="3.5.6-sim", help="engine version to report")
    sim.add_argument("--asset-kb", type=int, default=2, help="size of each binary result file, for download tests")
    sim.add_argument("--init-seconds", type=float, default=0.0,
                     help="time spent laying out files after commit, as a real NodeODM does (RUNNING, then QUEUED if busy)")
    sim.add_argument("--seed", type=int, default=None, help="seed the fault dice, for reproducible runs")
    sim.add_argument("--fragile", action="store_true",
                     help="crash on a NUL byte in an upload's file name, as NodeODM 2.2.x does (for testing)")

    demo = sub.add_parser("demo", help="start 3 simulated nodes and a coordinator, and process a sample job",
                          description="Everything on this machine: three simulated NodeODM nodes of different "
                                      "sizes, a coordinator on --port, and a split-merge-shaped job of several "
                                      "submodels sent through PyODM. Open the printed address to watch.")
    demo.add_argument("--port", type=int, default=3000, help="coordinator port (default 3000)")
    demo.add_argument("--submodels", type=int, default=6, help="how many submodels the sample job has")
    demo.add_argument("--images", type=int, default=12, help="images per submodel")
    demo.add_argument("--seconds-per-image", type=float, default=0.25, help="simulated speed of the fastest node")
    demo.add_argument("--state-dir", default=None, help="keep the demo's database here (default: temporary)")
    demo.add_argument("--exit-when-done", action="store_true", help="stop once the sample job has finished")

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


def _run_command(args: argparse.Namespace) -> int:
    from aiohttp import web

    from appliance.agent import create_app
    flags = {name: getattr(args, name) for name in RUN_SETTINGS}
    try:
        config = load_config(args.config, flags=flags)
    except ConfigError as exc:
        raise SystemExit(f"passel: {exc}") from None
    setup_logging(config.log_level)
    if args.first_boot:
        from appliance.firstboot import first_boot
        first_boot(config, args.config)

    async def freeze_start_up_objects(app: web.Application) -> None:
        # ~100k long-lived objects (SQLAlchemy, Alembic, aiohttp) made every full collection cost
        # ~50 ms, the whole p99 of bench/proxy_overhead.py at 50 clients; frozen, the GC skips them.
        gc.freeze()

    app = create_app(config)
    app.on_startup.append(freeze_start_up_objects)
    web.run_app(app, host=config.host, port=config.port, print=None,
                handle_signals=True, shutdown_timeout=5)
    return 0


def _simnode_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from appliance.simnode import SimnodeSettings, serve_simnode
    setup_logging("info")
    settings = SimnodeSettings(host=args.host, port=args.port, max_images=args.max_images, slots=args.slots,
                               cores=args.cores, memory_mb=args.memory_mb, seconds_per_image=args.seconds_per_image,
                               token=args.token, fail_rate=args.fail_rate, drop_upload_rate=args.drop_upload_rate,
                               stall_at=args.stall_at, data_dir=Path(args.data_dir) if args.data_dir else None,
                               name=args.name, engine=args.engine, engine_version=args.engine_version,
                               asset_kb=args.asset_kb, init_seconds=args.init_seconds, seed=args.seed,
                               fragile=args.fragile)
    _run_until_signal(serve_simnode(settings))
    return 0


def _run_until_signal(coro: Any) -> None:
    """Run a coroutine until it ends or SIGTERM/SIGINT arrives, then let it clean up."""
    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
    asyncio.run(main())


def _demo_command(args: argparse.Namespace) -> int:
    from appliance.demo import DemoOptions, run_demo
    setup_logging("info")
    options = DemoOptions(port=args.port, submodels=args.submodels, images=args.images,
                          seconds_per_image=args.seconds_per_image, state_dir=args.state_dir,
                          exit_when_done=args.exit_when_done)
    result: dict[str, Any] = {}
    _run_until_signal(run_demo(options, result))
    return 0 if result.get("ok", not args.exit_when_done) else 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"run": _run_command, "simnode": _simnode_command, "demo": _demo_command, "nodes": _nodes_command,
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
