"""ASGI middleware that keeps one HTTP connection from being read two ways (request smuggling).

A proxy in front of the server and the server itself must agree where each
request ends. Two guards make sure a disagreement cannot turn the body of one
request into another request:

* :class:`RefuseAmbiguousFraming`: a request with both ``Content-Length`` and
  ``Transfer-Encoding`` is refused (400) and its connection closed
  (RFC 9112, 6.1: such a message "ought to be handled as an error"; h11 alone
  would follow Transfer-Encoding and keep the connection).
* :class:`CloseAfterRefusal`: an answer sent before the request's body was
  read (a 401, a refused body) closes the connection, so the unread bytes are
  never parsed, by anyone, as the start of the next request.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RefuseAmbiguousFraming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _value in scope["headers"]}
            if b"transfer-encoding" in names and b"content-length" in names:
                refusal = JSONResponse(
                    {"error": "a request may carry Content-Length or Transfer-Encoding, not both", "code": "invalid"},
                    status_code=400, headers={"Connection": "close"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CloseAfterRefusal:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body_read = False

        async def tracked_receive() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_read:
                message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        await self.app(scope, tracked_receive, closing_send)
