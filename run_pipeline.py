#!/usr/bin/env python3
"""Run the streaming action-detection pipeline: ``python run_pipeline.py --help``.

The same command as ``actionpipe run`` (pipeline/cli.py holds it).
"""

from __future__ import annotations

import sys

from pipeline.cli import build_config, main, print_summary  # noqa: F401  (imported by tools and tests)

if __name__ == "__main__":
    sys.exit(main())
