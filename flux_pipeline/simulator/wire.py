"""Connection-level misbehaviour on raw ASGI: answers that never complete.

Both start a response advertising a ``Content-Length`` and return before sending all of it. An
ASGI server (uvicorn) then closes the connection, so an HTTP client sees a transport error
(httpx: ``RemoteProtocolError``) rather than an answer. ``httpx.ASGITransport`` buffers bodies
and cannot show this: test these over a real server.
"""

from __future__ import annotations

from starlette.types import Send


async def drop(send: Send) -> None:
    """Close without an answer: headers promising a body that never comes."""
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
