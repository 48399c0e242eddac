"""A stage process from its first line to its exit: settings, logging, the control channel, the stage, the report.

Every stage process:

* ignores SIGINT, SIGTERM and SIGHUP (the supervisor decides how to stop, so a
  signal to the whole process group drains like one to the supervisor);
* reads its settings from stdin (:mod:`pipeline.stages.settings`: a key
  either side does not know is refused at once);
* imports only what its stage uses: a capture process never loads PyTorch
  or an inference runtime (each kind's ``process`` module is imported by
  name, once the kind is known);
* watches its parent and exits within a second when the supervisor is gone
  (the stage loop, :mod:`pipeline.stages.loop`);
* after ``StageDone``, holds its output sockets open until the supervisor's
  ``Release`` (every stage downstream has finished): a receiver that is
  behind loses what its sender's kernel buffer still holds when the sender
  closes, whatever the LINGER (:class:`~pipeline.transport.control.Release`).

Exit status: 0 after ``StageDone``; 1 after ``StageFailed`` (``fatal`` when
a restart would fail the same way: an error of this project whose
``restart_helps`` is false, such as an engine this machine cannot run, or a
file that is missing or may not be read); 2 for a malformed start.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import sys
import traceback

from pipeline.errors import ActionPipeError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the supervisor drains on each
RELEASE_POLL_S = 0.1  # a finished stage waiting for Release checks this often that its supervisor lives


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # The supervisor starts us with these blocked, so no signal lands before we ignore them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))


def _fatal(exc: BaseException) -> bool:
    """About the user's input or machine: a restarted stage would meet it again."""
    if isinstance(exc, ActionPipeError):
        return not exc.restart_helps
    return isinstance(exc, (FileNotFoundError, PermissionError))


def main(argv: list[str]) -> int:
    _ignore_stop_signals()
    from pipeline.stages.settings import StageKind, StageSettingsError, decode_settings

    kinds = [k.value for k in StageKind]
    if len(argv) != 1 or argv[0] not in kinds:
        print(f"usage: python -m pipeline.stages {{{','.join(kinds)}}} < settings.json", file=sys.stderr)
        return 2
    kind = StageKind(argv[0])
    if kind is StageKind.CAPTURE:
        # Our own messages name the stream and say what to do; FFmpeg's and OpenCV's own would only repeat
        # them (and may print a URL). Set before cv2 is first imported.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        settings = decode_settings(kind, sys.stdin.read())
    except StageSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pipeline.logs import setup_logging

    setup_logging(settings.log_level, settings.stage)
    import zmq

    from pipeline.transport.control import ParentWatch, StageDone, StageFailed, StageLink

    context = zmq.Context()
    link = StageLink(context, settings.control_endpoint, settings.stage)
    parent = ParentWatch(settings.parent_pid)
    code = 0
    try:
        process = importlib.import_module(f"pipeline.stages.{kind.value}.process")
        link.send(StageDone(settings.stage, process.serve(settings, link, parent, context)))
        # The stage's output sockets are still open (link.hold_open; context.destroy below closes them): they
        # close once the supervisor says everything downstream has read them (Release), or nobody is left to.
        link.wait_for_release(parent, RELEASE_POLL_S)
    except Exception as exc:  # reported to the supervisor, which restarts the stage or ends the run
        fatal = _fatal(exc)
        link.send(StageFailed(settings.stage, f"{type(exc).__name__}: {exc}", fatal))
        if not fatal:
            traceback.print_exc(file=sys.stderr)  # a bug or a machine fault: keep the trace
        code = 1
    finally:
        orphaned = not parent.parent_alive()
        # With the supervisor gone nobody is left to drain to: drop what is queued rather than wait on it.
        link.close(linger=0 if orphaned else None)
        context.destroy(linger=0 if orphaned else None)  # closes the data sockets serve left open
        if orphaned:
            # The supervisor was killed and cannot clean up: the last stage out removes the run's sockets.
            shutil.rmtree(settings.run_dir, ignore_errors=True)
    return code
