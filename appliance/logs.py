"""Plain one-line logs that read well in `journalctl -u passel` and in a terminal.

At the default level every record is one line: a message written over several lines is joined, and an
error's traceback becomes its type and text at the end of the line. `--log-level debug` keeps the
tracebacks, for a developer.
"""

import logging
import os
import sys


class OneLineFormatter(logging.Formatter):
    """A record as one line, with an exception as `(Type: text)` instead of a traceback."""

    def formatException(self, ei):  # type: ignore[no-untyped-def]  # logging's own signature
        exc = ei[1]
        return f"({type(exc).__name__}: {exc})" if exc is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None  # a handler with tracebacks may have cached one on the record
        text = super().format(record)
        record.exc_text = None
        return " ".join(part.strip() for part in text.splitlines() if part.strip())


def setup_logging(level: str = "info") -> None:
    # journald stamps each line itself; a terminal gets the time added.
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S") if numeric <= logging.DEBUG
                         else OneLineFormatter(fmt, datefmt="%H:%M:%S"))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its internals; the store logs the upgrade in one line
    if numeric > logging.DEBUG:  # zeroconf reports each interface it cannot use; mdns.py says what matters
        logging.getLogger("zeroconf").setLevel(logging.CRITICAL)
