"""Plain one-line logs that read well in `journalctl -u passel` and in a terminal."""

import logging
import os
import sys


def setup_logging(level: str = "info") -> None:
    # journald stamps each line itself; a terminal gets the time added.
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
