"""What a source URI is, decided in one place: its kind, whether it is live,
how it may be shown (credentials removed), and the stream name it gets by default.

    file      path to a video (mp4, avi, mkv, ...)            replay
    folder    folder of images, in name order                 replay
    camera    index ("0") or V4L2 device ("/dev/video0")      live
    network   rtsp://, rtsps://, http://, https:// URLs       live

Credentials never leave this module unredacted: ``user:password@`` (a
password may itself hold ``/`` or ``@``) and every query-string value
(tokens, signatures) are masked in :func:`redact`, and stream names are built
from the host and path only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote

from pipeline.errors import ActionPipeError

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
MASK = "***"


class UriError(ActionPipeError, ValueError):
    """A source URI that cannot name a source; the message says what would."""


class SourceKind(str, Enum):
    FILE = "file"
    FOLDER = "folder"
    CAMERA = "camera"
    NETWORK = "network"

    @property
    def live(self) -> bool:
        return self in (SourceKind.CAMERA, SourceKind.NETWORK)


@dataclass(frozen=True)
class SourceUri:
    """A classified URI. ``raw`` may hold credentials: show ``display``, never ``raw``."""

    raw: str
    kind: SourceKind

    @property
    def display(self) -> str:
        return redact(self.raw)

    @property
    def live(self) -> bool:
        return self.kind.live

    def __repr__(self) -> str:  # a repr in a log or traceback must not leak a password either
        return f"SourceUri({self.display!r}, {self.kind.value})"


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """``rest`` after ``scheme://`` -> (userinfo or None, host-and-path).

    The userinfo ends at the LAST ``@`` before the query or fragment: users
    type passwords with ``@`` and ``/`` in them unescaped. (Whether an ``@``
    after a ``?`` belongs to the password or the query cannot be told; see
    :func:`_ambiguous`.)
    """
    authority_and_path = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" not in authority_and_path:
        return None, rest
    userinfo, _, _ = authority_and_path.rpartition("@")
    return userinfo, rest[len(userinfo) + 1:]


def _ambiguous(rest: str) -> bool:
    """An ``@`` after the first ``?`` or ``#``: a query value holding ``@``, or a password holding ``?`` or ``#``."""
    match = re.search(r"[?#]", rest)
    return bool(match) and "@" in rest[match.start():]


def redact(uri: str) -> str:
    """``uri`` fit for logs, errors, summaries and the control API: credentials and query values masked."""
    match = _SCHEME.match(uri)
    if not match:
        return uri
    scheme = match.group(1)
    rest = uri[match.end():]
    if _ambiguous(rest):
        # Either reading could show a secret; masking everything after the scheme cannot.
        return f"{scheme}://{MASK}"
    userinfo, rest = _split_userinfo(rest)
    rest, hash_mark, _fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    if question:
        masked = [f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else MASK for pair in query.split("&") if pair]
        path = f"{path}?{'&'.join(masked)}"
    if hash_mark:
        path += f"#{MASK}"
    return f"{scheme}://{MASK + '@' if userinfo is not None else ''}{path}"


def classify(uri: str) -> SourceUri:
    """Decide what ``uri`` is from its form alone (files are checked when opened)."""
    if not isinstance(uri, str) or not uri.strip():
        raise UriError("source URI is empty: give a video file, an image folder, a camera index or an rtsp:// or http(s):// URL")
    if uri != uri.strip():
        raise UriError(f"source URI {redact(uri.strip())!r} has leading or trailing spaces")
    match = _SCHEME.match(uri)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return classify(local_path(uri))
        if scheme not in NETWORK_SCHEMES:
            raise UriError(
                f"source URI {redact(uri)!r}: scheme {scheme}:// is not supported; use "
                + ", ".join(f"{s}://" for s in NETWORK_SCHEMES)
            )
        _userinfo, host_and_path = _split_userinfo(uri[match.end():])
        host = re.split(r"[/?#]", host_and_path, maxsplit=1)[0]
        if not host or host.startswith(":"):
            raise UriError(f"source URI {redact(uri)!r} names no host")
        return SourceUri(uri, SourceKind.NETWORK)
    if uri.isdigit():
        return SourceUri(uri, SourceKind.CAMERA)
    if uri.startswith("/dev/video"):
        return SourceUri(uri, SourceKind.CAMERA)
    path = Path(uri)
    if path.is_dir():
        return SourceUri(uri, SourceKind.FOLDER)
    return SourceUri(uri, SourceKind.FILE)


def local_path(file_uri: str) -> str:
    """The path a ``file://`` URI names on this machine (RFC 8089: ``file:///abs/path`` or
    ``file://localhost/abs/path``, percent-escapes decoded); a plain path is returned as it is."""
    match = _SCHEME.match(file_uri)
    if not match or match.group(1).lower() != "file":
        return file_uri
    rest = file_uri[match.end():]
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost"):
        raise UriError(f"source URI {file_uri!r}: a file:// URI names a path on this machine, as file:///abs/path "
                       f"(not host {host!r}); or give the path itself")
    return unquote(slash + path) or "/"


def default_stream_name(uri: str) -> str:
    """The operator's name for a stream: the file stem, ``cameraN``, or the URL's last path segment.

    Built from host and path only, so no credential or query value can reach a
    metric label or an event.
    """
    match = _SCHEME.match(uri)
    if match and match.group(1).lower() != "file":
        _userinfo, rest = _split_userinfo(uri[match.end():])
        tail = re.split(r"[?#]", rest, maxsplit=1)[0].rstrip("/")
        candidate = tail.rsplit("/", 1)[-1] if "/" in tail else tail.split(":")[0]
    elif uri.isdigit():
        candidate = f"camera{uri}"
    else:
        path = Path(local_path(uri) if match else uri)
        candidate = path.stem if path.suffix else path.name
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", candidate).strip("._-") or "stream"
    return cleaned[:64]


def valid_stream_name(name: str) -> bool:
    return bool(STREAM_NAME_PATTERN.match(name))


_NAMED_SOURCE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})=(.+)$")


def source_entry(arg: str) -> dict:
    """A source as the command line gives it, ``NAME=URI`` or ``URI``, as a sources entry; a URI with a
    scheme or a path never parses as a name."""
    match = _NAMED_SOURCE.match(arg)
    if match and "/" not in match.group(1) and ":" not in match.group(1):
        return {"name": match.group(1), "uri": match.group(2)}
    return {"uri": arg}
