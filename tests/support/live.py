"""Checks shared by the system tests of live operation: credentials that must never leak, the steps a
file gives offline, frame accounting, whether a process still runs."""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.readers import VideoFileReader
from pipeline.sources.sampling import StepSampler

# Credentials that must never be seen outside the capture process: a password
# holding both '@' and '/' (as typed, and percent-encoded as FFmpeg needs it to
# connect), and a token in the query string.
PASSWORD = "p@ss/w0rd"
PASSWORD_ENCODED = "p%40ss%2Fw0rd"
TOKEN = "s3cr3t-t0ken"
SECRETS = (PASSWORD, PASSWORD_ENCODED, "w0rd", TOKEN)


def secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a credential leaked: {secret!r} in {text[:200]!r}..."


def offline_steps(path: Path, step_rate: float = 4.0) -> list[float]:
    """The steps the model takes on ``path``, decoded exactly as capture decodes it."""
    sampler = StepSampler(step_rate)
    reader = VideoFileReader(path)
    steps = []
    while (frame := reader.read(sampler.accept)) is not None:
        if frame.image is not None:
            steps.append(frame.t)
    reader.close()
    return steps


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def accounted(row: dict) -> bool:
    """Every frame captured was processed or dropped with a reason."""
    return row["captured"] == row["processed"] + sum(row["dropped"].values())
