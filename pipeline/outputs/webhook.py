"""Events as HTTP POSTs (``outputs.webhook``): one JSON event per request, in order, retried with backoff.

The transport says what a response means; :class:`~pipeline.outputs.delivery.BackgroundSink`
does the buffering and the retrying, one request at a time. A 2xx is
delivered; a timeout (``timeout_s`` per request), a refused connection, 408,
429 and 5xx are temporary (retried); any other status is a refusal (the
record is dropped and counted: sending it again cannot help).

A request that timed out may still have reached the receiver, so the retry
sends the same event again: each request carries the event's stable id as an
``Idempotency-Key`` header (and as ``id`` in the body), by which a receiver
keeps the first copy and answers 2xx to the repeats. Exactly once by id, in
order, or counted as lost.

The URL may carry a token; logs show it without one.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from pipeline.events import ActionEvent
from pipeline.outputs.delivery import DeliveryError
from pipeline.sources.uri import redact

RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_temporary(status: int) -> bool:
    return status in RETRIED_STATUSES or status >= 500


class WebhookTransport:
    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {redact(url)!r} must start with http:// or https://")
        self._shown = redact(url)
        self._timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", "User-Agent": "actionpipe", **(headers or {})}
        parts = urllib.parse.urlsplit(url)
        if parts.username is not None:
            # urllib does not send URL credentials itself: they become a Basic header, and leave the URL.
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers.setdefault("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            if ":" in (parts.hostname or ""):
                netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        self._url = urllib.parse.urlunsplit(parts)

    def deliver(self, event: ActionEvent) -> None:
        body = json.dumps(event.to_json(), separators=(",", ":")).encode()
        headers = {**self._headers, "Idempotency-Key": event.id} if event.id else self._headers
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"{self._shown} answered {exc.code} {exc.reason}", permanent=not is_temporary(exc.code)) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, reset
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{self._shown}: {reason}") from exc

    def close(self) -> None:
        return None
