"""Which sources the control API may add: files only from the folders the operator named.

A source added over HTTP is chosen by whoever can reach the API, not by the
operator who wrote the config, so a local file or folder is accepted only
when its path, with every symlink and ``..`` resolved, lies inside one of
``control.media_roots``; with none configured, no file is. The refusal reads
the same whether the path exists or not, and never shows where a symlink
leads, so the API cannot be used to learn what is on the disk. The path
that was checked is the path that is opened: the source is handed on with
its resolved path (and the stream name the given path would have had).

Network URLs (rtsp://, http(s)://) and cameras (an index, or exactly
``/dev/videoN``) are accepted: they name a server or a device, not a file
whose contents could come back. Who may add anything at all is the token's
business (``control.token``, ``control.require_token``).
Sources in the config file are the operator's own and are not checked here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import SourceConfig, stream_name
from pipeline.errors import ActionPipeError
from pipeline.sources.uri import SourceKind, classify, local_path, redact

_CAMERA_DEVICE = re.compile(r"^/dev/video[0-9]+$")


class SourceNotAllowed(ActionPipeError, PermissionError):
    """A source the control API may not add; the message says where files may come from."""


def _refusal(uri: str, roots: Sequence[Path]) -> SourceNotAllowed:
    where = ", ".join(str(root) for root in roots) if roots else "none configured"
    return SourceNotAllowed(
        f"source {redact(uri)!r}: files added through the control API must be under control.media_roots ({where})"
    )


def admit(source: SourceConfig, roots: Sequence[Path]) -> SourceConfig:
    """``source`` as it may be added through the API (a file's path resolved), or SourceNotAllowed."""
    kind = classify(source.uri).kind
    if kind is SourceKind.NETWORK:
        return source
    path = local_path(source.uri)
    if kind is SourceKind.CAMERA and (path.isdigit() or _CAMERA_DEVICE.match(path)):
        return source
    # Anything else names a path on this machine (a "/dev/video..." that is not a device among them).
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop: refused like any path outside the roots
        raise _refusal(source.uri, roots) from None
    for root in roots:
        if resolved.is_relative_to(Path(root).resolve()):
            return source.model_copy(update={"uri": str(resolved), "name": stream_name(source)})
    raise _refusal(source.uri, roots)
