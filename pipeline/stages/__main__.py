"""``python -m pipeline.stages KIND``: one stage process, started by the supervisor.

KIND is capture, embed or temporal; the stage's settings arrive as one JSON
object on stdin (never on the command line, where ``ps`` would show them).
"""

import os
import sys

from pipeline.stages.entry import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything the stage owns is flushed and closed by now; skip the interpreter's teardown of
    # ONNX Runtime or PyTorch, which would add most of a second to every stop.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
