"""The web app's guards: the access token, the request size limit and the security headers.

- **Token**: every ``/api/`` call except ``/api/health`` needs ``Authorization: Bearer T``
  or the cookie that the token link (``/login?token=T``) sets; compared in constant time
  (:func:`hmac.compare_digest`).
- **Size**: a request whose ``Content-Length`` exceeds the limit gets 413 before its body
  is read; uploads without a length are cut off while read (:func:`read_limited`).
- **Headers** on every answer: a Content-Security-Policy without inline scripts or any
  other origin, ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .limits import TooLarge

COOKIE = "mindlens_token"
OPEN_PATHS = ("/api/health",)
#: headroom over the image limit for the multipart envelope and the other fields
ENVELOPE = 256 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin")]


def token_ok(expected: str | None, headers: dict[str, str], cookies: dict[str, str]) -> bool:
    """Whether the request carries the token (always true without one)."""
    if not expected:
        return True
    auth = headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else cookies.get(COOKIE, "")
    return hmac.compare_digest(given.encode(), expected.encode())


class Guard:
    """Pure ASGI middleware: token, size limit and headers (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, max_bytes: int) -> None:
        self.app, self.token, self.max_bytes = app, token, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + HEADERS
            await send(message)

        path = scope.get("path", "")
        if path.startswith("/api/") and path not in OPEN_PATHS and not token_ok(
                self.token, headers, _cookies(headers.get("cookie", ""))):
            await _reply(send_with_headers, 401, {"detail": "missing or wrong token: send "
                                                  "Authorization: Bearer <token>, or open the "
                                                  "token link the server printed"},
                         [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes + ENVELOPE:
            await _reply(send_with_headers, 413, {"detail": f"the request has {int(length):,} "
                                                  f"bytes; the limit is {self.max_bytes:,} "
                                                  f"(mindlens serve --max-upload-mb)"})
            return
        await self.app(scope, receive, send_with_headers)


def _cookies(raw: str) -> dict[str, str]:
    out = {}
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k:
            out[k] = v
    return out


async def _reply(send: Any, status: int, body: dict[str, Any],
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": data})


async def read_limited(upload: Any, max_bytes: int, what: str = "the image") -> bytes:
    """The bytes of an uploaded file, refused (413) past ``max_bytes``."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{what} is larger than the limit of {max_bytes:,} bytes "
                       f"(mindlens serve --max-upload-mb)")
    return data
