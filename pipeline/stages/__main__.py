"""``python -m pipeline.stages KIND``: one stage process, started by the supervisor.

KIND is capture, embed, temporal or overlay; the stage's settings arrive as
one JSON object on stdin (never on the command line, where ``ps`` would show
them): :mod:`pipeline.stages.bootstrap`.

For profiling: with ``ACTIONPIPE_PROFILE_DIR`` set, each stage process runs
under cProfile and writes ``KIND-PID.prof`` there when it ends
(``python -m pstats FILE``; the benchmark doc shows what it found).
"""

import os
import sys

from pipeline.stages.bootstrap import main

if __name__ == "__main__":
    profile_dir = os.environ.get("ACTIONPIPE_PROFILE_DIR")
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        code = profiler.runcall(main, sys.argv[1:])
        profiler.dump_stats(os.path.join(profile_dir, f"{sys.argv[1]}-{os.getpid()}.prof"))
    else:
        code = main(sys.argv[1:])
    # Everything the stage owns is flushed and closed by now; skip the interpreter's teardown of
    # ONNX Runtime or PyTorch, which would add most of a second to every stop.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
