"""The API's one error response: ``{"detail": sentence, ...extra}`` with a status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class Problem(Exception):
    """Raised by routes and dependencies; rendered by ``problem_response``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


async def problem_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return JSONResponse(
        {"detail": exc.detail, **exc.extra}, status_code=exc.status, headers=exc.headers
    )
