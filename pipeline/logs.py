"""Logging set-up for the pipeline's processes: one line per record on stderr, naming the process.

Library modules only ever call ``logging.getLogger(__name__)``; this is called
once by each process's entry point (the command line, each stage process).
"""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str, process: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
