"""RTSP streams through PyAV: the transport chosen per stream, and the stream's own timestamps kept.

OpenCV takes FFmpeg's options only from one environment variable for the
whole process, so it cannot read one camera over TCP and the next over UDP.
PyAV opens each stream with its own options (``rtsp_transport``, timeouts)
and hands over each frame's presentation timestamp, which places live
frames in time (:mod:`pipeline.sources.live_time`).

Transports (``rtsp_transport`` of a source): ``tcp`` (RTP interleaved on the
RTSP connection: through firewalls and NAT, nothing lost), ``udp`` (RTP on
its own ports: what some servers and publish/play relays only offer),
``http`` (RTSP tunnelled over HTTP), and ``auto``, the default: TCP, then
UDP when the server refuses TCP (``400 Bad Request`` or ``461 Unsupported
Transport`` to the TCP SETUP). The capture stage keeps the transport that
worked for the stream's reconnects.

Errors name the real cause, never the URL's credentials: a refused
transport is not a codec problem, and nothing a server answers is final
(:mod:`pipeline.sources.probe` says why).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator

from pipeline.sources.frames import RawFrame, SourceOpenError, want_all
from pipeline.sources.live_time import StreamClock
from pipeline.sources.probe import NEEDS_PERSON, explain_open_failure, server_of
from pipeline.sources.uri import redact

TRANSPORTS = ("auto", "tcp", "udp", "http")


class TransportRefused(SourceOpenError):
    """The server refused the transport asked for (it may take another)."""


def open_rtsp(uri: str, transport: str = "auto", open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
              origin: float | None = None, clock: Callable[[], float] = time.monotonic,
              decoder_threads: int = 0) -> "RtspReader":
    """An open RTSP stream; with ``auto``, over TCP, else over UDP when the server refuses TCP.
    Raises SourceOpenError naming the cause (and, with ``auto``, what each transport got)."""
    import av

    if transport not in TRANSPORTS:
        raise SourceOpenError(f"rtsp_transport {transport!r}: use one of {', '.join(TRANSPORTS)}", True)
    tries = ("tcp", "udp") if transport == "auto" else (transport,)
    refused: TransportRefused | None = None
    for attempt in tries:
        try:
            # A live stream that sends nothing for read_timeout_s (stale_after_s) is given up on that soon,
            # over UDP as over TCP. FFmpeg's RTSP reader waits about twice its socket timeout before it gives
            # up (measured on a relay that stopped sending: 6 s for 3 s), so it gets half.
            wait_s = min(open_timeout_s, read_timeout_s) / 2
            container = av.open(uri, options={"rtsp_transport": attempt, "timeout": str(int(wait_s * 1e6))},
                                timeout=(open_timeout_s, read_timeout_s / 2))
        except av.error.FFmpegError as exc:
            failure = _explain(exc, uri, attempt, open_timeout_s)
            if isinstance(failure, TransportRefused) and attempt != tries[-1]:
                refused = failure
                continue
            if refused is not None:
                raise SourceOpenError(f"{refused}; over UDP: {_cause(failure, uri)}", failure.permanent,
                                      failure.needs_person) from None
            raise failure from None
        if not container.streams.video:
            container.close()
            raise SourceOpenError(f"cannot open {redact(uri)}: the server sends no video stream", False)
        return RtspReader(container, attempt, clock() if origin is None else origin, clock, decoder_threads)
    raise AssertionError("unreachable: the last transport either opened or raised")


def _cause(failure: SourceOpenError, uri: str) -> str:
    return str(failure).removeprefix(f"cannot open {redact(uri)}: ")


def _explain(exc, uri: str, transport: str, timeout_s: float) -> SourceOpenError:
    """What went wrong, in words an operator can act on, with what the state machine should do."""
    import av

    shown = redact(uri)
    try:
        host, port = server_of(uri)
    except ValueError:
        return SourceOpenError(f"cannot open {shown}: the URL is malformed", True)
    where = f"{host}:{port}"
    over = transport.upper()
    status = {av.error.HTTPBadRequestError: 400, av.error.HTTPUnauthorizedError: 401,
              av.error.HTTPForbiddenError: 403, av.error.HTTPNotFoundError: 404}.get(type(exc))
    if status in NEEDS_PERSON:
        return SourceOpenError(f"cannot open {shown}: the server answered {exc.strerror.split('returned ')[-1]} "
                               f"({NEEDS_PERSON[status]})", False, needs_person=True)
    if status == 400 or exc.errno == errno.EPROTONOSUPPORT:
        # 400 to the SETUP of a transport it does not serve, 461 Unsupported Transport (EPROTONOSUPPORT).
        return TransportRefused(f"cannot open {shown}: the server refuses RTSP over {over} "
                                f"({'400 Bad Request' if status == 400 else '461 Unsupported Transport'})", False)
    if isinstance(exc, av.error.HTTPError):
        return SourceOpenError(f"cannot open {shown}: the server answered {exc.strerror.split('returned ')[-1]}",
                               False)
    # FFmpeg says little else ("Input/output error" for a refused connection): ask the server itself.
    failure = explain_open_failure(uri, min(timeout_s, 5.0))
    if failure.permanent or failure.needs_person or "the server answers" not in failure.message:
        return SourceOpenError(failure.message, failure.permanent, failure.needs_person)
    # It answers RTSP, yet the stream could not be set up or read over this transport.
    return SourceOpenError(f"cannot open {shown} over {over}: {exc.strerror or type(exc).__name__} "
                           f"({where} answers RTSP; try another rtsp_transport?)", False)


class RtspReader:
    """A live RTSP stream read with PyAV; frames placed in time by their own timestamps
    (``RawFrame.age_s`` says how late each one arrived)."""

    is_live = True
    ended_early = False

    def __init__(self, container, transport: str, origin: float, clock: Callable[[], float],
                 decoder_threads: int = 0) -> None:
        self._container = container
        self._stream = container.streams.video[0]
        if decoder_threads > 0:
            self._stream.codec_context.thread_count = decoder_threads
        self.transport = transport
        self._origin = origin
        self._clock = clock
        self._time = StreamClock()
        rate = self._stream.average_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else None
        self.decode_errors = 0
        self._frames = self._decoded()

    def _decoded(self) -> Iterator:
        import av

        for packet in self._container.demux(self._stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                self.decode_errors += 1  # a damaged frame (lost packets): skipped, the stream goes on

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        """The next frame, or None when the stream ended, failed or sent nothing for the read timeout."""
        import av

        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except (av.error.FFmpegError, OSError):
            return None  # the server closed, the network went away or went quiet: the caller reconnects
        timestamp = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        placed = self._time.place(timestamp, self._clock() - self._origin)
        if not want(placed.t):
            return RawFrame(placed.t, None, placed.age_s)
        return RawFrame(placed.t, frame.to_ndarray(format="bgr24"), placed.age_s)

    def close(self) -> None:
        self._container.close()
