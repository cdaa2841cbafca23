"""A node's failures in words a responder reads: "the NodeODM on laptop does not answer", not
"Cannot connect to host 127.0.0.1:3001 ssl:default [Connect call failed]".

`node_problem` is used where such messages are made (the registry's node errors, forwarding's
refusals); `readable` rewrites what is already stored (events, a task's errors) when a page shows it,
so rows written before this module, or by code that still writes raw text, read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

# (pattern in the raw text, what it means), most specific first; {node} is the node's name
_MEANINGS: list[tuple[re.Pattern[str], str]] = [(re.compile(p, re.IGNORECASE), s) for p, s in [
    (r"name or service not known|nodename nor servname|temporary failure in name resolution|getaddrinfo",
     "The address of the NodeODM on {node} cannot be found on this network"),
    (r"no route to host|network is unreachable|host is unreachable",
     "The network cannot reach the NodeODM on {node}: check its cable or Wi-Fi"),
    (r"cannot connect to host|connect call failed|connection refused|errno 111",
     "The NodeODM on {node} does not answer: nothing is listening at its address (is it switched on?)"),
    (r"timeout|timed out",
     "The NodeODM on {node} is too slow to answer: it may be overloaded, or the network is poor"),
    (r"server disconnected|connection reset|broken pipe|connection aborted|payload is not completed",
     "The NodeODM on {node} dropped the connection"),
    (r"invalid authentication token|token does not match|\bHTTP 40[13]\b|unauthori[sz]ed|forbidden",
     "The NodeODM on {node} refused Passel's token"),
    (r"did not answer JSON|not valid json|unexpected mimetype",
     "Something answers at the address of the NodeODM on {node}, but it is not a NodeODM"),
    (r"\bHTTP 5\d\d\b",
     "The NodeODM on {node} reported an internal error"),
    (r"\bHTTP 404\b|task not found|not found",
     "The NodeODM on {node} no longer has this task"),
]]
# where a raw exception starts inside a stored message (everything after it is replaced)
_RAW = re.compile(r"(https?://\S+ did not answer|Cannot connect to host|Connect call failed|Server disconnected"
                  r"|Connection reset|Connection refused|TimeoutError|Timeout on|HTTP \d{3} from)", re.IGNORECASE)
_URL = re.compile(r"https?://[\w.\-\[\]]+(?::\d+)?(?:/[\w.\-/]*[\w/])?(?:\?[\w=&.\-%]*)?")
_HOST = re.compile(r"host ([\w.\-]+:\d+)")
_SAYS_SILENT = re.compile(r"(is not answering|went offline|is offline)$")  # the sentence says it better
# Passel's words for a task's state that mean nothing to a responder
_JARGON = [(" (ODM is shown RUNNING)", ""), (" (QUEUED)", "")]


def host_port(url: str) -> str:
    """A node's address without the scheme or token: '10.0.0.7:3001'."""
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or url


def node_problem(error: BaseException | str, node: str) -> str:
    """One sentence for a failed call to a node; `node` is its label or its box's name."""
    raw = (str(error) or type(error).__name__) if isinstance(error, BaseException) else str(error)
    for pattern, sentence in _MEANINGS:
        if pattern.search(raw) or (isinstance(error, BaseException) and pattern.search(type(error).__name__)):
            return sentence.format(node=node) + "."
    said = _URL.sub(lambda m: host_port(m.group(0)), raw).strip()
    return f"The NodeODM on {node} answered: {said.rstrip('.')}."


def readable(message: str, names: Mapping[str, str]) -> str:
    """A stored message as a responder reads it: a raw node failure in it becomes a sentence, and
    node addresses become the names the pages use (`names`: node URL -> name)."""
    if not message:
        return message
    text = message
    for before, after in _JARGON:
        text = text.replace(before, after)
    raw = _RAW.search(text)
    if raw is not None:
        head, rest = text[:raw.start()], text[raw.start():]
        address = next(iter(_URL.findall(rest) or _URL.findall(head) or _HOST.findall(rest)), "")
        sentence = node_problem(rest, _name(address, names) if address else "its box")
        head = re.sub(r"\s+\(\)", "", _URL.sub("", head)).strip().rstrip(":;,-").strip()
        text = f"{head.rstrip('.')}. {sentence}" if head and not _SAYS_SILENT.search(head) else sentence
    return _name_urls(text, names)


def _name(address: str, names: Mapping[str, str]) -> str:
    base = address.split("?", 1)[0].rstrip("/")
    for known, name in names.items():
        if known.split("?", 1)[0].rstrip("/") == base or host_port(known) == host_port(base):
            return name
    return host_port(base)


def _name_urls(text: str, names: Mapping[str, str]) -> str:
    """'laptop (http://10.0.0.7:3001)' and a bare 'http://10.0.0.7:3001' both read 'laptop'."""
    def replace(match: re.Match[str]) -> str:
        return _name(match.group(0), names)
    text = re.sub(r"(\S+) \((https?://[^)\s]+)\)",
                  lambda m: m.group(1) if _name(m.group(2), names) == m.group(1) else _name(m.group(2), names), text)
    return _URL.sub(replace, text)
