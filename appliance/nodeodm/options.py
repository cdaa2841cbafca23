"""Check task options the way NodeODM does, only stricter.

Options travel as a JSON string `[{"name": ..., "value": ...}]`. Unknown names are dropped and
values are converted to the declared type. Unlike NodeODM we also reject values that do not convert
(NodeODM lets `NaN` through when an option has no domain, and truncates `3.7` for an int) and
options that are not a list of objects (NodeODM runs those as no options), so nothing malformed
reaches a node.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

OptionValue = bool | int | float | str

OPTIONS_NOT_A_LIST = 'Invalid options: expected a JSON list of {"name": ..., "value": ...} objects'


class OptionsError(ValueError):
    """Raised with the exact text that goes into NodeODM's `{"error": ...}` reply."""


@dataclass(frozen=True)
class OptionSpec:
    """One entry of `GET /options`."""

    name: str
    type: str  # int, float, string, bool, enum
    value: str
    domain: str | list[str]
    help: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OptionSpec:
        """Build from one element of a node's `/options` reply."""
        domain = data.get("domain", "")
        return cls(
            name=str(data["name"]),
            type=str(data.get("type", "string")),
            value=str(data.get("value", "")),
            domain=list(map(str, domain)) if isinstance(domain, list) else str(domain or ""),
            help=str(data.get("help", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "value": self.value,
                "domain": self.domain, "help": self.help}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1", 1):
        return True
    if value in ("false", "0", 0):
        return False
    raise ValueError(f"Cannot convert {value} to boolean")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"Invalid value {value} (not an integer)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid value {value} (not an integer)") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"Invalid value {value} (not an integer)")
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"Invalid value {value} (not a number)")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid value {value} (not a number)") from None
    if not math.isfinite(number):
        raise ValueError(f"Invalid value {value} (not a number)")
    return number


def _to_string(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"Invalid value {json.dumps(value)} (not a string)")
    return value if isinstance(value, str) else json.dumps(value)


_CONVERTERS: dict[str, Callable[[Any], OptionValue]] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_float,
    "string": _to_string,
    "enum": _to_string,
    "path": _to_string,
}

_RANGE = re.compile(r"^(float|integer): ([-+.\d]+) <= x <= ([-+.\d]+)$")
_BOUND = re.compile(r"^(float|integer) (>=|>|<|<=) ([-+.\d]+)$")
_SIGNED = re.compile(r"^(positive |negative )?(integer|float)$")


def _js_number(value: OptionValue) -> str:
    """Print a number as NodeODM (JavaScript) does in its messages: -5.0 is "-5"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(value: OptionValue) -> str:
    """Print a value as NodeODM (JavaScript) would in its messages: 5 not 5.0, true not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_domain(domain: str | list[str], value: OptionValue) -> None:
    """Raise ValueError with NodeODM's wording when `value` is outside `domain`."""
    if isinstance(domain, list):
        if value not in domain:
            raise ValueError(f"Invalid value {_shown(value)} (not in enum)")
        return
    if not domain or domain in ("string", "path", "<string>"):
        return
    in_range: bool
    if m := _SIGNED.match(domain):
        sign, _ = m.groups()
        in_range = (value >= 0) if sign == "positive " else (value <= 0) if sign == "negative " else True
    elif domain == "percent":
        in_range = 0 <= value <= 100
    elif m := _RANGE.match(domain):
        in_range = float(m.group(2)) <= value <= float(m.group(3))
    elif m := _BOUND.match(domain):
        bound, op = float(m.group(3)), m.group(2)
        in_range = {">=": value >= bound, ">": value > bound, "<": value < bound, "<=": value <= bound}[op]
    elif domain == "json":
        try:
            json.loads(value)  # type: ignore[arg-type]
            in_range = True
        except (TypeError, ValueError):
            in_range = False
    else:
        return  # free-text domain such as "<positive float>" descriptions: nothing to enforce
    if not in_range:
        raise ValueError(f"Invalid value {_js_number(value)} (out of range)")


def parse_options_field(raw: str | None) -> list[dict[str, Any]]:
    """Decode the `options` form field; an absent or empty field means no options."""
    if raw is None or raw.strip() == "":
        return []
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise OptionsError(f"Invalid options: not valid JSON ({exc.msg} at position {exc.pos})") from None
    # NodeODM runs a value that is not a list as no options at all, which hides a client's mistake.
    if not isinstance(decoded, list) or not all(isinstance(o, dict) for o in decoded):
        raise OptionsError(OPTIONS_NOT_A_LIST)
    return [o for o in decoded if isinstance(o.get("name"), str)]


def validate_options(raw: str | None, specs: Iterable[OptionSpec]) -> list[dict[str, OptionValue]]:
    """Return the typed options that `specs` knows, or raise OptionsError in NodeODM's shape."""
    given = parse_options_field(raw)
    by_name: dict[str, dict[str, Any]] = {}
    for option in given:
        by_name.setdefault(option["name"], option)  # the first occurrence wins, as in NodeODM
    result: list[dict[str, OptionValue]] = []
    errors: list[dict[str, str]] = []
    for spec in specs:
        if spec.name not in by_name:
            continue
        try:
            value = _CONVERTERS.get(spec.type, _to_string)(by_name[spec.name].get("value"))
            _check_domain(spec.domain, value)
        except ValueError as exc:
            errors.append({"name": spec.name, "error": str(exc)})
            continue
        result.append({"name": spec.name, "value": value})
    if errors:
        raise OptionsError(json.dumps(errors, separators=(",", ":")))
    return result


def set_option(options: list[dict[str, Any]], name: str, value: OptionValue) -> list[dict[str, Any]]:
    """Return `options` with `name` set to `value`, replacing any earlier value."""
    return [o for o in options if o["name"] != name] + [{"name": name, "value": value}]


def has_option(options: Iterable[dict[str, Any]], name: str) -> bool:
    return any(o["name"] == name for o in options)
