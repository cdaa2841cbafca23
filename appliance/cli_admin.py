"""`passel password` and `passel priority`: the admin settings of the UI's Settings page, from a shell."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from appliance.admin_client import PASSWORD_ENV, AdminClient, add_api_flags


def add_admin_parsers(sub: Any) -> None:
    password = sub.add_parser("password", help="set the admin password (first time), or change it",
                              description="Set or change the admin password on every live box of the passel. "
                                          "The first time needs nothing; a change needs the current one "
                                          f"(--password or {PASSWORD_ENV}). The new one is asked for twice, "
                                          "or read from standard input with --stdin.")
    password.add_argument("--stdin", action="store_true", help="read the new password from standard input")
    priority = sub.add_parser("priority", help="change a box's election priority until it restarts",
                              description="When no coordinator is alive, the live box with the highest priority "
                                          "takes the role. This changes it on the box --api points at, until that "
                                          "box restarts (set --priority in its settings to keep it).")
    priority.add_argument("value", type=int, help="the new priority (a whole number; higher wins)")
    for parser in (password, priority):
        add_api_flags(parser, what="the box's API")


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New admin password: ")
    if first != getpass.getpass("Repeat it: "):
        raise SystemExit("The two passwords differ; nothing was changed")
    return first


def password_command(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    is_set = bool(client.call("GET", "/-/password").get("set"))
    old = args.password or ""
    if is_set and not old:
        old = getpass.getpass("Current admin password: ")
    result = client.call("POST", "/-/password", {"old": old, "new": _new_password(args.stdin)})
    for box, outcome in result.get("boxes", {}).items():
        print(f"{box}: {outcome}")
    return 0 if all(o == "changed" for o in result.get("boxes", {}).values()) else 1


def priority_command(args: argparse.Namespace) -> int:
    result = AdminClient.from_args(args).call("POST", "/-/priority", {"priority": args.value})
    print(f"Priority is now {result['priority']} ({result['note']})")
    return 0
