"""Request checks before any route runs: every bad input becomes a clear 4xx, never a 500.

- NUL and other control characters in the path or query string: 422 (Postgres text cannot
  hold NUL, and no identifier of ours has control characters).
- JSON bodies: larger than the upload limit 413; nested deeper than `MAX_JSON_DEPTH` 422
  (a deeply nested document would exhaust the parser's recursion); a NUL character
  anywhere in them 422.
The body is read once here and handed on unchanged.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from invoicechain.config import get_settings
from invoicechain.inputs import MAX_JSON_DEPTH, json_depth_exceeds

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Pure ASGI middleware (streams other bodies, such as multipart uploads, untouched)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        query = scope.get("query_string") or b""
        for part, what in ((raw_path, "path"), (query, "query string")):
            text = unquote(part.decode("latin-1"), errors="replace")
            if _CONTROL.search(text):
                return await _answer(send, 422, f"The {what} holds a NUL or control character.")
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if scope.get("method") not in _BODY_METHODS or "json" not in ctype:
            return await self.app(scope, receive, send)

        limit = get_settings().max_upload_bytes + 64 * 1024
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _answer(send, 413, f"The JSON body is over the {limit}-byte limit.")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _answer(send, 413, f"The JSON body is over the {limit}-byte limit.")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if json_depth_exceeds(body, MAX_JSON_DEPTH):
            return await _answer(send, 422, f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if b"\x00" in body or b"\\u0000" in body.lower():
            return await _answer(send, 422, "The JSON body holds a NUL character, which no field accepts.")

        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
