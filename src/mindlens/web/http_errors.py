"""Errors as JSON answers: each exception type of the web app with its HTTP status, one
mechanism for the explanation API and the audit API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def answer_errors(app: FastAPI, statuses: Mapping[type[Exception], int],
                  retry_after_s: int) -> None:
    """Answer each exception type with ``{"detail": message}`` and its status; a 503
    (busy, not ready yet) says when to retry, also in ``Retry-After``."""
    for kind, status in statuses.items():
        app.add_exception_handler(kind, _handler(status, retry_after_s))


def _handler(status: int, retry_after_s: int
             ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_request: Request, e: Exception) -> JSONResponse:
        if status == 503:
            return JSONResponse({"detail": f"{e}; retry in a moment"}, status_code=503,
                                headers={"Retry-After": str(retry_after_s)})
        return JSONResponse({"detail": str(e)}, status_code=status)
    return handle
