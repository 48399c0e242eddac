"""A live frame's true time: the stream's own timestamps, anchored to the arrival clock.

Stamping a live frame with its arrival time is wrong whenever frames arrive
in a burst: after a network outage FFmpeg hands over what it had buffered
all at once, and those frames would be scored as if they had just happened.
Instead each frame keeps the spacing of its presentation timestamps (RTP
clock, container pts), anchored so that the least delayed frame seen so far
lands on its arrival. A frame's *age* is how much later than that it
arrived: a buffered burst is old, and the capture stage drops it as
``stale`` when its age passes ``stale_after_s``.

The anchor only moves earlier (a frame that arrives with less delay than any
before it shows the true offset), except when the timestamps jump back (the
server restarted its clock): then it is set again from that frame, so a
stream's time never goes backwards. A stream without timestamps is stamped
by arrival. Pure: arrival times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placed:
    t: float  # the frame's time on the arrival clock
    age_s: float  # how long before its arrival it was captured, as far as its timestamps tell (>= 0)


class StreamClock:
    def __init__(self) -> None:
        self._offset: float | None = None  # arrival clock minus timestamp, for the least delayed frame
        self._last_t: float | None = None

    def place(self, timestamp_s: float | None, arrival: float) -> Placed:
        if timestamp_s is None:
            t = arrival if self._last_t is None else max(arrival, self._last_t)
            self._last_t = t
            return Placed(t, 0.0)
        offset = arrival - timestamp_s
        if self._offset is None or offset < self._offset:
            self._offset = offset
        t = timestamp_s + self._offset
        if self._last_t is not None and t <= self._last_t:
            # The timestamps went back: the server restarted its clock. Count from this frame again.
            self._offset = offset
            t = max(arrival, self._last_t)
        self._last_t = t
        return Placed(t, max(0.0, arrival - t))
