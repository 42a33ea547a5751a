"""Connection-level misbehaviour on raw ASGI: answers that never complete.

Both start a response advertising a ``Content-Length`` and return before sending all of it. An
ASGI server (uvicorn) then closes the connection, so an HTTP client sees a transport error
(httpx: ``RemoteProtocolError``) rather than an answer. ``httpx.ASGITransport`` buffers bodies
and cannot show this: test these over a real server.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Send


class TrackedReceive:
    """An ASGI ``receive`` that remembers whether the request body has been read to its end."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.body_done = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            self.body_done = True
        return message


async def drop(receive: TrackedReceive, send: Send) -> None:
    """Close without an answer: headers promising a body that never comes.

    The request body is read first (when the handler has not), so that closing sends a clean
    FIN: unread bytes would make the kernel answer with a reset instead.
    """
    while not receive.body_done:
        await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
        }
    )


async def truncated(send: Send, body: bytes, media_type: str) -> None:
    """Advertise the full body, send about half of it, then stop."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
