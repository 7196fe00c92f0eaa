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

from app.store.keys import SCOPES, ApiKey, KeyStore
from connectors.http.errors import Problem
from connectors.http.limits import RateLimiter, retry_after

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
    key_prefix: str | None = None  # None when auth is off

    @classmethod
    def of(cls, key: ApiKey) -> Caller:
        return cls(key.name, key.scopes, f"key:{key.prefix}", key.prefix)


@dataclass
class AuthConfig:
    keys: KeyStore
    limiter: RateLimiter
    required: bool


def unauthorized(detail: str = UNAUTHORIZED) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def presented_key(
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    header: str | None = Depends(_header),
) -> str | None:
    """The key a request carries in either header, or None."""
    return bearer.credentials if bearer is not None else header


async def authorize(request: Request, presented: str | None, scope: str) -> Caller:
    """The caller ``presented`` makes (anyone when auth is off), holding ``scope`` and
    within its rate; raises the 401, 403 or 429 ``Problem`` otherwise."""
    config: AuthConfig = request.app.state.auth
    if not config.required:
        host = request.client.host if request.client else "unknown"
        caller = Caller("anonymous", frozenset(SCOPES), f"ip:{host}")
    else:
        if not presented:
            raise unauthorized()
        key = await config.keys.authenticate(presented.strip())
        if key is None:
            raise unauthorized()
        if not key.allows(scope):
            raise Problem(
                403,
                f"this API key lacks the scope '{scope}' that this route needs",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        caller = Caller.of(key)
    throttle(config, caller)
    return caller


def throttle(config: AuthConfig, caller: Caller) -> None:
    """Take one request from ``caller``'s bucket; raises 429 when it is empty."""
    wait = config.limiter.take(caller.bucket)
    if wait > 0:
        raise Problem(
            429,
            "rate limit exceeded for this API key (ARBITER_HTTP_RATE_PER_S / _BURST): "
            "slow down and retry after the Retry-After seconds",
            headers={"Retry-After": retry_after(wait)},
        )


def require(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that lets a request through only with a key holding ``scope``."""
    assert scope in SCOPES, scope

    async def check(
        request: Request,
        presented: str | None = Depends(presented_key),
    ) -> Caller:
        return await authorize(request, presented, scope)

    return check
