"""`--option NAME=VALUE` checked against the options the passel's nodes offer (`GET /options`) before
any image is uploaded: NodeODM drops a name it does not know without a word, and refuses a bad value
only once the images are up, in JSON. The check is the nodes' own (appliance.nodeodm.options)."""

from __future__ import annotations

import difflib
import json
from typing import Any

from appliance.nodeodm.options import OptionsError, OptionSpec, validate_options


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """`["dsm=true", "--pc-quality=low"]` as {"dsm": "true", "pc-quality": "low"}; the last one of a name wins."""
    options: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().lstrip("-"):
            raise SystemExit(f"--option needs NAME=VALUE, e.g. --option dsm=true, not {pair!r}")
        options[name.strip().lstrip("-")] = value.strip()
    return options


def _accepts(spec: OptionSpec) -> str:
    """What an option takes, in words."""
    if spec.type == "bool":
        return "true or false"
    if isinstance(spec.domain, list):
        return "one of " + ", ".join(v or '""' for v in spec.domain)
    kind = {"int": "a whole number", "float": "a number"}.get(spec.type, "text")
    return f"{kind} ({spec.domain})" if spec.domain and spec.domain not in ("integer", "float", "string") else kind


def _unknown(name: str, names: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        listed = f"{', '.join(close[:-1])} or {close[-1]}" if len(close) > 1 else close[0]
        return f"there is no option {name!r} (did you mean {listed}?)"
    return f"there is no option {name!r} (the nodes' {len(names)} options are listed at {where}/options)"


def check_options(given: dict[str, str], specs: list[OptionSpec], where: str) -> list[dict[str, Any]]:
    """The options typed as the nodes declare them, or SystemExit with every problem in one line."""
    if not given:
        return []
    if not specs:
        raise SystemExit(f"The passel at {where} knows no node yet, so it would drop every --option: add a node "
                         "(`passel nodes add URL`) or wait until one is online, then send again.")
    by_name = {s.name: s for s in specs}
    problems = [_unknown(name, sorted(by_name), where) for name in given if name not in by_name]
    try:
        typed = validate_options(json.dumps([{"name": n, "value": v} for n, v in given.items()]), specs)
    except OptionsError as exc:
        typed = []
        for bad in json.loads(str(exc)):
            spec = by_name[bad["name"]]
            problems.append(f"{spec.name}={given[spec.name]} is not accepted, as it takes {_accepts(spec)}")
    if problems:
        raise SystemExit(f"Nothing was sent: {'; '.join(problems)}.")
    return typed
