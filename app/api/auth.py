"""API key authentication and per-key rate limits, as FastAPI dependencies.

``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A missing, malformed, unknown
or revoked key gets the same 401 (so a caller learns nothing about which keys exist); a
valid key without the route's scope gets 403. With ``api_auth`` off, every caller is
"anonymous" with every scope and is rate-limited by client address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import Problem
from app.api.limits import RateLimiter, retry_after
from app.store.keys import SCOPES, KeyStore

# Declared for the OpenAPI document (the "Authorize" button in /docs); checked below.
_bearer = HTTPBearer(auto_error=False, description="An Arbiter API key: `arb_…`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Same key, other header.")

UNAUTHORIZED = (
    "missing or invalid API key: send 'Authorization: Bearer <key>' (arbiter keys create)"
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name and scopes, or ``anonymous`` when auth is off."""

    name: str
    scopes: frozenset[str]
    bucket: str  # the rate-limit bucket


@dataclass
class AuthConfig:
    keys: KeyStore
    limiter: RateLimiter
    required: bool


def _unauthorized() -> Problem:
    return Problem(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def require(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that lets a request through only with a key holding ``scope``."""
    assert scope in SCOPES, scope

    async def check(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
        header: str | None = Depends(_header),
    ) -> Caller:
        config: AuthConfig = request.app.state.auth
        if not config.required:
            host = request.client.host if request.client else "unknown"
            caller = Caller("anonymous", frozenset(SCOPES), f"ip:{host}")
        else:
            presented = bearer.credentials if bearer is not None else header
            if not presented:
                raise _unauthorized()
            key = await config.keys.authenticate(presented.strip())
            if key is None:
                raise _unauthorized()
            if not key.allows(scope):
                raise Problem(
                    403,
                    f"this API key lacks the scope '{scope}' that this route needs",
                    headers={
                        "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'
                    },
                )
            caller = Caller(key.name, key.scopes, f"key:{key.prefix}")
        wait = config.limiter.take(caller.bucket)
        if wait > 0:
            raise Problem(
                429,
                "rate limit exceeded for this API key (ARBITER_HTTP_RATE_PER_S / _BURST): "
                "slow down and retry after the Retry-After seconds",
                headers={"Retry-After": retry_after(wait)},
            )
        return caller

    return check
