"""``python -m pipeline.stages KIND``: one stage process, started by the supervisor.

KIND is capture, embed or temporal; the stage's settings arrive as one JSON
object on stdin (never on the command line, where ``ps`` would show them).
"""

import sys

from pipeline.stages.entry import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
