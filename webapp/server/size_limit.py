"""The request-size limit: ASGI middleware in front of Gradio, so that no request body larger
than the server needs is ever held in memory (docs/reliability.md)."""

from __future__ import annotations

import json

from webapp.inference.engine import MAX_PROMPT_CHARS

# The largest request body the server reads: a prompt of MAX_PROMPT_CHARS characters is at most
# ~120 KB of JSON, so this leaves room for a clear "too long" answer to a long paste, and keeps
# a hostile client from making the server hold megabytes per request (or fill the upload folder).
MAX_REQUEST_BYTES = 2**20
# A refused body is read and dropped up to this many bytes, so that its sender gets the answer;
# a client that sends more is cut off (its connection reset) instead.
DRAIN_BYTES = 16 * MAX_REQUEST_BYTES


class RequestSizeLimit:
    """ASGI middleware: a request body over max_bytes is answered 413 with one sentence, before
    it is read into memory (declared by Content-Length, or counted as it streams in)."""

    def __init__(self, app, max_bytes: int = MAX_REQUEST_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await send_refusal(receive, send, 413, self.too_large())
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise RequestTooLarge
            return message

        async def unless_too_large(message):
            if received <= self.max_bytes:  # past the limit, the app's own answer (a 400: body unreadable) is dropped
                await send(message)

        try:
            await self.app(scope, counted, unless_too_large)
        except RequestTooLarge:
            pass
        if received > self.max_bytes:
            await send_refusal(receive, send, 413, self.too_large())

    def too_large(self) -> str:
        return (
            f"The request is larger than {self.max_bytes / 2**20:g} MB; "
            f"a prompt may have at most {MAX_PROMPT_CHARS:,} characters."
        )


class RequestTooLarge(Exception):
    pass


async def send_refusal(receive, send, status: int, detail: str) -> None:
    """Answer `status` with {"detail": detail}. What the client is still sending is read and
    dropped first (memory stays flat), so that it gets the answer instead of a broken
    connection; a client sending without end is cut off after DRAIN_BYTES."""
    dropped = 0
    while dropped < DRAIN_BYTES:
        message = await receive()
        dropped += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
