"""Why a network stream did not open, asked of the server itself.

OpenCV only says "not opened". When it does, one plain request to the same
server tells the operator why (connection refused, no answer, HTTP 404, RTSP
401) and tells the stream's state machine how to go on. Nothing a server
answers is final: a restreaming relay (go2rtc, mediamtx) answers 404 or 503
while the camera behind it is down, and serves it again once it is back. So
only a malformed URL is permanent; answers that usually need a person (401
credentials, 403 rights, 404 a path) are retried slowly; everything else at
the stream's backoff.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pipeline.sources.uri import redact

# Answers that usually need a person: a hint for the operator, and a slow retry.
NEEDS_PERSON = {401: "check the user and password", 403: "check the user's rights", 404: "check the path"}


@dataclass(frozen=True)
class OpenFailure:
    message: str  # for logs and the control API; never holds credentials
    permanent: bool  # retrying cannot help
    needs_person: bool = False  # retry slowly: the server's answer usually takes a person to change


def _authority(uri: str) -> tuple[str, int, str, str | None, str | None]:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    default_port = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322}[scheme]
    # Passwords with '@' or '/' confuse urlsplit; take the host after the last '@' ourselves.
    netloc = uri.split("://", 1)[1]
    userinfo, at, host_part = netloc.rpartition("@")
    host_port = host_part.split("/", 1)[0].split("?", 1)[0]
    host, _, port = host_port.partition(":")
    if host_port.startswith("["):  # IPv6 literal
        host, _, port = host_port[1:].partition("]")
        port = port.lstrip(":")
    path = "/" + host_part.split("/", 1)[1] if "/" in host_part else "/"
    user = password = None
    if at:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
    if port and not port.isdigit():
        raise ValueError(f"port {port!r} is not a number")
    return host, int(port) if port else default_port, path, user, password


def server_of(uri: str) -> tuple[str, int]:
    """The host and port a network URI names (the scheme's port by default); ValueError when malformed."""
    try:
        host, port, _path, _user, _password = _authority(uri)
    except KeyError:
        raise ValueError(f"{redact(uri)}: not a network URL") from None
    return host, port


def explain_open_failure(uri: str, timeout_s: float) -> OpenFailure:
    """Ask the server behind ``uri`` why it cannot be read; the answer never holds credentials."""
    shown = redact(uri)
    try:
        host, port, path, user, password = _authority(uri)
    except (ValueError, KeyError):
        return OpenFailure(f"cannot open {shown}: the URL is malformed", True)
    scheme = uri.split("://", 1)[0].lower()
    try:
        if scheme in ("http", "https"):
            status, reason = _http_status(scheme, host, port, path, user, password, timeout_s)
        else:
            status, reason = _rtsp_status(scheme, host, port, uri, timeout_s)
    except ConnectionRefusedError:
        return OpenFailure(f"cannot open {shown}: connection refused by {host}:{port} (is the server up?)", False)
    except socket.gaierror:
        return OpenFailure(f"cannot open {shown}: host {host!r} cannot be resolved", False)
    except (socket.timeout, TimeoutError):
        return OpenFailure(f"cannot open {shown}: {host}:{port} accepted but sent nothing within {timeout_s:g} s", False)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return OpenFailure(f"cannot open {shown}: {type(exc).__name__}: {exc}", False)
    if status is None:
        return OpenFailure(f"cannot open {shown}: {host}:{port} answered, but not as a {scheme.upper()} server", False)
    if status in NEEDS_PERSON:
        return OpenFailure(f"cannot open {shown}: the server answered {status} {reason} ({NEEDS_PERSON[status]})",
                           False, needs_person=True)
    if status >= 400:
        return OpenFailure(f"cannot open {shown}: the server answered {status} {reason}", False)
    return OpenFailure(
        f"cannot open {shown}: the server answers ({status} {reason}) but OpenCV could not decode the stream "
        "(an unsupported codec or format?)",
        False,
    )


def _http_status(scheme: str, host: str, port: int, path: str, user: str | None, password: str | None,
                 timeout_s: float) -> tuple[int | None, str]:
    if scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ssl._create_unverified_context()  # cameras use self-signed certs
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.reason
    finally:
        connection.close()


def _rtsp_status(scheme: str, host: str, port: int, uri: str, timeout_s: float) -> tuple[int | None, str]:
    request_uri = f"{scheme}://{host}:{port}{_authority(uri)[2]}"
    request = f"DESCRIBE {request_uri} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: actionpipe-probe\r\n\r\n"
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        sock = ssl._create_unverified_context().wrap_socket(raw, server_hostname=host) if scheme == "rtsps" else raw
        sock.settimeout(timeout_s)
        sock.sendall(request.encode())
        answer = sock.recv(4096).decode("latin-1")
    first = answer.split("\r\n", 1)[0].split(" ", 2)
    if len(first) < 2 or not first[0].startswith("RTSP/") or not first[1].isdigit():
        return None, ""
    return int(first[1]), first[2] if len(first) > 2 else ""
