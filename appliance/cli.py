"""The `passel` command: run a box, a simulated node, the demo, and manage nodes. Every error of every
command ends as one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys

from appliance import __version__
from appliance.admin_client import AdminError
from appliance.cli_admin import add_admin_parsers, password_command, priority_command
from appliance.cli_download import add_download_parser, download_command
from appliance.cli_key import add_key_parser, key_command
from appliance.cli_nodes import add_nodes_parser, nodes_command
from appliance.cli_run import add_run_parsers, demo_command, run_command, simnode_command
from appliance.cli_status import add_status_parsers, status_command, transfer_command
from appliance.cli_submit import add_submit_parser, submit_command
from appliance.cli_tasks import add_tasks_parser, tasks_command
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

HANDLERS = {"run": run_command, "simnode": simnode_command, "demo": demo_command, "status": status_command,
            "transfer": transfer_command, "key": key_command, "tasks": tasks_command, "nodes": nodes_command,
            "sleep": power_command, "wake": power_command, "submit": submit_command, "download": download_command,
            "doctor": doctor_command, "password": password_command, "priority": priority_command}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="passel", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"passel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parsers(sub)
    add_status_parsers(sub)
    add_key_parser(sub)
    add_tasks_parser(sub)
    add_nodes_parser(sub)
    add_power_parsers(sub)
    add_submit_parser(sub)
    add_download_parser(sub)
    add_doctor_parser(sub)
    add_admin_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # --help writes too
        if args.command not in HANDLERS:
            parser.print_help()
            return 2
        code = HANDLERS[args.command](args)
        sys.stdout.flush()  # a reader that has gone (`| head`) shows here, inside the try
        return code
    except AdminError as exc:  # the one line a field technician reads, instead of a traceback
        raise SystemExit(str(exc)) from None
    except BrokenPipeError:  # the reader stopped early, as `head` does: quietly stop too (Python's docs on SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
        return 1
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
