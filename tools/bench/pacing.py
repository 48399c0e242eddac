"""What waiting between frames costs on this machine: the CPU per frame of the same work run flat out
and run once every ``gap``, the thread sleeping in between as a real-time pipeline's stages do.

The suite's ideal (``tools/bench/suite.py``) adds up decode and the engine, each timed flat out. A
stage of a live pipeline below its saturation waits between frames, and where the cores idle
meanwhile, the frame after a wait can cost more CPU (clock frequency, cold caches, a virtual CPU
that its host took back). This measures by how much: the gaps alternate within each round, so a
drift in the machine's speed hits them alike, and each figure is the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.errors import ActionPipeError


class PacingError(ActionPipeError, ValueError):
    """Gaps or counts that cannot be measured."""


@dataclass(frozen=True)
class PacedCost:
    gap_s: float
    cpu_ms_per_call: float  # the median over the rounds of the mean CPU per call
    vs_flat_out: float  # against the same work with no gap, in the same run


def paced_costs(work: Callable[[], object], gaps_s: Sequence[float], calls: int, rounds: int,
                cpu_clock: Callable[[], float] = time.thread_time,
                sleep: Callable[[float], None] = time.sleep) -> list[PacedCost]:
    """CPU per call of ``work`` at each gap (0.0, flat out, must be one of them), in ``gaps_s``' order."""
    if 0.0 not in gaps_s:
        raise PacingError(f"gaps {list(gaps_s)} lack 0 (flat out), the figure the others are compared with")
    if any(gap < 0 for gap in gaps_s) or len(set(gaps_s)) != len(gaps_s):
        raise PacingError(f"gaps {list(gaps_s)} must be distinct and not negative")
    if calls < 1 or rounds < 1:
        raise PacingError(f"calls ({calls}) and rounds ({rounds}) must be at least 1")
    per_round: dict[float, list[float]] = {gap: [] for gap in gaps_s}
    for _ in range(rounds):
        for gap in gaps_s:
            spent = 0.0
            for _ in range(calls):
                if gap:
                    sleep(gap)
                began = cpu_clock()
                work()
                spent += cpu_clock() - began
            per_round[gap].append(1000 * spent / calls)
    medians = {gap: statistics.median(costs) for gap, costs in per_round.items()}
    return [PacedCost(gap, cost, cost / medians[0.0]) for gap, cost in medians.items()]


def decode_steps(video, step_rate: float, size: int = 224) -> Callable[[], None]:
    """One call: capture's work for one step of ``video`` (decode up to the next sampled frame, prepare
    it), on one decoder thread as in ``stages.decode_alone``; the video starts again at its end."""
    import cv2

    from pipeline.sources.decoding import prepare_frame
    from pipeline.sources.sampling import StepSampler

    state: dict = {}

    def reopen() -> None:
        state["capture"] = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        state["sampler"] = StepSampler(step_rate)
        if not state["capture"].isOpened():
            raise PacingError(f"{video} cannot be opened by OpenCV")

    def step() -> None:
        for _ in range(2):  # at the end of the video, once more from its start
            capture = state["capture"]
            while capture.grab():
                if state["sampler"].accept(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0):
                    ok, image = capture.retrieve()
                    if ok:
                        prepare_frame(image, size, size)
                        return
            capture.release()
            reopen()
        raise PacingError(f"{video} holds no frame to step on")

    reopen()
    return step


def engine_frames(engine, frames) -> Callable[[], None]:
    """One call: ``engine`` embeds the next of ``frames`` (prepared), at batch 1 as at low load."""
    position = [0]

    def embed() -> None:
        i = position[0] % len(frames)
        engine.embed(frames[i:i + 1])
        position[0] += 1

    engine.embed(frames[:1])  # warm-up: the arena grows once
    return embed


def message_decoding(messages: int = 6) -> Callable[[], None]:
    """One call: the temporal worker's parsing of ``messages`` embedding messages (a round's worth at 32
    live substreams), tens of microseconds of Python where the engine's call is milliseconds."""
    import numpy as np

    from engines.spec import EMBEDDING_DIM, STATS_DIM
    from pipeline.transport.messages import EmbeddingHeader, decode_embedding, encode_embedding

    rng = np.random.default_rng(0)
    wire = []
    for i in range(messages):
        header = EmbeddingHeader(f"cam{i}", 100 + i, 20.0 + i / 5, 1.7e9, 0, 1.7e9, EMBEDDING_DIM, STATS_DIM,
                                 live=True)
        wire.append(encode_embedding(header, rng.normal(size=EMBEDDING_DIM).astype(np.float32),
                                     rng.uniform(size=STATS_DIM).astype(np.float32)))

    def decode() -> None:
        for data in wire:
            decode_embedding(data)

    return decode
