"""The HTTP API's pure pieces: the per-key token bucket and its Retry-After, API key
parsing and hashing, the body-size limit while the body arrives, and intake's per-item
decoding. No broker, no server: the rate limit's 429 goes through an in-process ASGI app
with a fake clock, and only the constant-time check touches a (real SQLite) database."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.types import Message

from app.simulator.generate import generate
from app.store import create_engine, upgrade
from app.store.keys import (
    ApiKeyError,
    KeyStore,
    check_name,
    check_scopes,
    hash_key,
    key_prefix,
    new_key,
)
from connectors.http import intake
from connectors.http.auth import AuthConfig, Caller, require
from connectors.http.errors import Problem, problem_response
from connectors.http.limits import RateLimiter, read_body, retry_after
from tests.shipped import TYPES

MAX_BYTES = 64 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _transactions(n: int, seed: int = 5) -> list[bytes]:
    return [e.value for e in generate(n, seed=seed, mix={"transaction": 1}, malformed_rate=0.0)]


# --- rate limiter: token bucket ----------------------------------------------------


def test_a_fresh_key_may_spend_its_whole_burst_at_once() -> None:
    """A new key starts with ``burst`` tokens: that many requests pass at the same instant."""
    limiter = RateLimiter(2.0, 5, clock=FakeClock())
    assert [limiter.take("k") for _ in range(5)] == [0.0] * 5


def test_past_the_burst_the_wait_is_the_time_to_earn_one_token() -> None:
    """With the bucket empty, ``take`` refuses and says how long until one token is back."""
    limiter = RateLimiter(2.0, 3, clock=FakeClock())
    for _ in range(3):
        limiter.take("k")
    assert limiter.take("k") == pytest.approx(0.5)


def test_a_refused_request_spends_nothing_and_obeying_the_wait_succeeds() -> None:
    """Waiting exactly the answered time lets the next request through."""
    clock = FakeClock()
    limiter = RateLimiter(4.0, 1, clock=clock)
    limiter.take("k")
    wait = limiter.take("k")
    assert wait == pytest.approx(0.25)
    assert limiter.take("k") == pytest.approx(0.25)  # asking again costs nothing
    clock.advance(wait)
    assert limiter.take("k") == 0.0


def test_tokens_refill_at_the_rate_but_never_above_the_burst() -> None:
    """An hour idle earns back ``burst`` tokens, not ``rate`` x 3600."""
    clock = FakeClock()
    limiter = RateLimiter(10.0, 3, clock=clock)
    for _ in range(3):
        limiter.take("k")
    clock.advance(3600)
    assert [limiter.take("k") for _ in range(3)] == [0.0] * 3
    assert limiter.take("k") > 0.0


def test_a_partial_refill_shortens_the_wait() -> None:
    """Half a token earned leaves half a token's time to wait."""
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1, clock=clock)
    limiter.take("k")
    clock.advance(0.5)
    assert limiter.take("k") == pytest.approx(0.5)


def test_each_key_has_its_own_bucket() -> None:
    """One key's exhausted bucket does not slow another key down."""
    limiter = RateLimiter(1.0, 1, clock=FakeClock())
    limiter.take("a")
    assert limiter.take("a") > 0.0
    assert limiter.take("b") == 0.0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.0001, "2"), (3.34, "4")]
)
def test_retry_after_is_whole_seconds_rounded_up_and_never_zero(wait: float, header: str) -> None:
    """Retry-After rounds up, so a client that obeys it is not refused again."""
    assert retry_after(wait) == header


def test_obeying_retry_after_at_a_slow_rate_gets_through() -> None:
    """At 0.3 tokens/s the wait is 3.33 s, Retry-After says 4, and 4 s later it passes."""
    clock = FakeClock()
    limiter = RateLimiter(0.3, 1, clock=clock)
    limiter.take("k")
    header = retry_after(limiter.take("k"))
    assert header == "4"
    clock.advance(int(header))
    assert limiter.take("k") == 0.0


def _limited_app(clock: FakeClock, rate: float, burst: int) -> FastAPI:
    app = FastAPI()
    app.state.auth = AuthConfig(
        keys=cast(KeyStore, None),  # auth off: the key store is never asked
        limiter=RateLimiter(rate, burst, clock=clock),
        required=False,
    )
    app.add_exception_handler(Problem, problem_response)

    @app.get("/limited")
    async def limited(caller: Caller = Depends(require("decide"))) -> dict[str, str]:  # noqa: B008
        return {"caller": caller.name}

    return app


async def test_the_route_answers_429_with_retry_after_past_the_burst_then_recovers() -> None:
    """Through the real dependency: the burst passes, the next gets 429 with the right
    Retry-After and a sentence saying what to do, and after that many seconds it passes."""
    clock = FakeClock()
    app = _limited_app(clock, rate=0.5, burst=3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        codes = [(await client.get("/limited")).status_code for _ in range(3)]
        refused = await client.get("/limited")
        assert codes == [200, 200, 200]
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
        assert "Retry-After" in refused.json()["detail"]
        clock.advance(1.9)
        assert (await client.get("/limited")).status_code == 429
        clock.advance(0.1)
        assert (await client.get("/limited")).status_code == 200


# --- API keys: format, hashing, constant-time check ----------------------------------


def test_a_new_key_is_arb_prefix_secret_and_its_prefix_parses_back() -> None:
    """``new_key`` gives ``arb_<8 chars>_<43 chars>`` and ``key_prefix`` reads the 8 back."""
    prefix, key = new_key()
    assert key.startswith(f"arb_{prefix}_")
    assert len(prefix) == 8
    assert len(key.split("_", 2)[2]) == 43
    assert key_prefix(key) == prefix


def test_new_keys_do_not_repeat() -> None:
    """Prefixes and secrets are random: 200 keys are 200 different keys."""
    assert len({new_key()[1] for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "arb_",
        "arb_abcdefgh",
        "arb_abcdefgh_short",
        "arb_ABCDEFGH_" + "A" * 43,  # upper-case prefix
        "arb_abcdefg_" + "A" * 43,  # 7-character prefix
        "arb_abcdefgh_" + "A" * 44,  # secret one too long
        "arb_abcdefgh_" + "A" * 42 + "=",  # padding is not part of a key
        "xyz_abcdefgh_" + "A" * 43,
        "Bearer arb_abcdefgh_" + "A" * 43,
        " arb_abcdefgh_" + "A" * 43,
        "arb_abcdefgh_" + "A" * 43 + "\n",  # a trailing newline is not a key
    ],
)
def test_anything_but_a_well_formed_key_has_no_prefix(presented: str) -> None:
    """Malformed keys are refused before any lookup: ``key_prefix`` is None."""
    assert key_prefix(presented) is None


def test_the_stored_hash_is_sha256_of_the_whole_key_and_changes_with_one_character() -> None:
    """Only SHA-256 hex of the full key is kept; one changed secret character differs."""
    _, key = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key not in hash_key(key)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert hash_key(tampered) != hash_key(key)


def test_unknown_or_missing_scopes_are_refused_naming_the_known_ones() -> None:
    """``check_scopes`` names the unknown scope and lists the valid ones; none at all is refused."""
    assert check_scopes(["decide", "decide"]) == frozenset({"decide"})
    with pytest.raises(ApiKeyError, match=r"unknown scope\(s\) write.*known scopes are"):
        check_scopes(["decide", "write"])
    with pytest.raises(ApiKeyError, match="at least one --scope"):
        check_scopes([])


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "name/slash"])
def test_unusable_key_names_are_refused_saying_what_is_allowed(name: str) -> None:
    """Names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    with pytest.raises(ApiKeyError, match="use 1-64 letters"):
        check_name(name)


@pytest.mark.sqlite
async def test_keys_are_checked_with_compare_digest_and_a_tampered_secret_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``authenticate`` compares the stored and presented hashes with
    ``hmac.compare_digest``; the right key passes, one changed character does not."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await upgrade(url)
    engine = create_engine(url)
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # keys.py looks it up per call
    try:
        store = KeyStore(engine, cache_s=60, miss_refresh_s=0)
        created, key = await store.create("checkout", ["decide"])
        found = await store.authenticate(key)
        assert found is not None
        assert found.name == "checkout"
        assert compared[-1] == (hash_key(key), hash_key(key))
        tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert await store.authenticate(tampered) is None
        assert compared[-1] == (hash_key(key), hash_key(tampered))
        assert await store.authenticate(key + "\n") is None  # the newline is hashed too
        calls = len(compared)
        assert await store.authenticate("not-a-key") is None
        assert len(compared) == calls  # malformed: refused before any hash or lookup
        assert created.prefix == key_prefix(key)
    finally:
        await engine.dispose()


# --- body size while it arrives --------------------------------------------------------


def _request(chunks: list[bytes], content_length: str | None) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks``; the list counts the chunks handed out."""
    handed: list[int] = [0]
    headers = [] if content_length is None else [(b"content-length", content_length.encode())]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": headers}

    async def receive() -> Message:
        i = handed[0]
        handed[0] += 1
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    return Request(scope, receive), handed


async def test_a_declared_content_length_over_the_limit_is_refused_before_reading() -> None:
    """Content-Length above the limit → 413 naming both sizes, no chunk read."""
    request, handed = _request([b"x" * 10], "5000")
    with pytest.raises(Problem) as refused:
        await read_body(request, 1024)
    assert refused.value.status == 413
    assert "5,000 bytes; the limit is 1,024" in refused.value.detail
    assert handed == [0]


async def test_an_undeclared_body_is_cut_off_at_the_chunk_that_crosses_the_limit() -> None:
    """Without Content-Length the body is counted as it arrives; reading stops at the
    first chunk past the limit, and the 413 says 'at least'."""
    request, handed = _request([b"a" * 600, b"b" * 600, b"c" * 600, b"d" * 600], None)
    with pytest.raises(Problem) as refused:
        await read_body(request, 1024)
    assert refused.value.status == 413
    assert "at least 1,200 bytes" in refused.value.detail
    assert handed == [2]


async def test_a_lying_content_length_does_not_get_past_the_limit() -> None:
    """A small declared length with a big body is still stopped while it arrives."""
    request, _ = _request([b"a" * 800, b"b" * 800], "10")
    with pytest.raises(Problem) as refused:
        await read_body(request, 1024)
    assert refused.value.status == 413


async def test_a_body_of_exactly_the_limit_is_read_whole() -> None:
    """The limit is inclusive: chunks adding up to it are joined and returned."""
    request, _ = _request([b"a" * 512, b"b" * 512], "1024")
    assert await read_body(request, 1024) == b"a" * 512 + b"b" * 512


# --- intake: bodies to items, items to events ------------------------------------------


def test_one_object_is_one_item_with_its_bytes_as_sent() -> None:
    """An object body is kept byte for byte (no re-serialisation)."""
    raw = b'{ "a" : 1 }'
    assert intake.split_body(raw, max_items=10) == [raw]


def test_an_array_is_split_into_one_compact_document_per_element() -> None:
    """Each element becomes its own JSON document, in order, non-ASCII kept as UTF-8."""
    items = intake.split_body('[{"a": 1}, {"b": "é"}]'.encode(), max_items=10)
    assert items == [b'{"a":1}', '{"b":"é"}'.encode()]


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"", 400, "the body is empty"),
        (b"  \n ", 400, "the body is empty"),
        (b"[]", 422, "empty array"),
        (b'{"a": NaN}', 400, "NaN is not JSON"),
        (b'{"a": "\xff"}', 400, "byte 7 cannot be decoded"),
    ],
)
def test_unusable_bodies_are_refused_as_a_whole(raw: bytes, status: int, says: str) -> None:
    """Empty, empty-array, NaN and non-UTF-8 bodies get one error for the whole body."""
    with pytest.raises(intake.BadBody) as refused:
        intake.split_body(raw, max_items=10)
    assert refused.value.status == status
    assert says in refused.value.detail


def test_malformed_json_is_refused_with_its_line_column_and_position() -> None:
    """The 400 points at the broken character so the client can find it."""
    with pytest.raises(intake.BadBody) as refused:
        intake.split_body(b'{\n  "a": 1,\n  "b": }', max_items=10)
    assert refused.value.status == 400
    assert refused.value.extra == {"line": 3, "column": 8, "position": 19}
    assert "line 3, column 8" in refused.value.detail


def test_more_items_than_the_batch_limit_is_413_saying_to_split() -> None:
    """``max_items`` + 1 items → 413 naming both counts and the setting."""
    body = json.dumps([{"i": i} for i in range(4)]).encode()
    assert len(intake.split_body(body, max_items=4)) == 4
    with pytest.raises(intake.BadBody) as refused:
        intake.split_body(body, max_items=3)
    assert refused.value.status == 413
    assert "4 items" in refused.value.detail
    assert "ARBITER_HTTP_MAX_BATCH" in refused.value.detail


def test_check_events_accepts_valid_items_and_reports_each_invalid_one_by_index() -> None:
    """Valid items come back decoded with their index and bytes; each invalid one comes
    back with its index, the decoder's reason and detail, and its event_id when readable."""
    good = _transactions(2)
    bad = json.loads(good[1])
    bad["amount"] = -5
    bad["event_id"] = "bad-1"
    items = [good[0], json.dumps(bad).encode(), b"[1, 2]", good[1]]
    accepted, errors = intake.check_events(
        "transaction", items, max_bytes=MAX_BYTES, models=TYPES.models
    )
    assert [(a.index, a.raw) for a in accepted] == [(0, good[0]), (3, good[1])]
    assert accepted[0].item.event_id == json.loads(good[0])["event_id"]
    assert [(e.index, e.reason, e.event_id) for e in errors] == [
        (1, "validation", "bad-1"),
        (2, "not_an_object", None),
    ]
    assert "amount" in errors[0].detail
    assert errors[0].as_json() == {
        "index": 1,
        "reason": "validation",
        "detail": errors[0].detail,
        "event_id": "bad-1",
    }
    assert "event_id" not in errors[1].as_json()


def test_an_item_over_the_event_size_limit_is_oversize_not_the_whole_body() -> None:
    """One item over ``max_bytes`` is refused alone with reason ``oversize``."""
    small, big = sorted(_transactions(2), key=len)
    assert len(small) < len(big), "two events of one size cannot show the limit"
    accepted, errors = intake.check_events(
        "transaction", [small, big], max_bytes=len(big) - 1, models=TYPES.models
    )
    assert [a.index for a in accepted] == [0]
    assert [(e.index, e.reason) for e in errors] == [(1, "oversize")]


def test_an_event_of_another_type_fails_validation_against_the_routes_type() -> None:
    """A transaction posted to the order route is a validation error for that item."""
    (txn,) = _transactions(1)
    accepted, errors = intake.check_events("order", [txn], max_bytes=MAX_BYTES, models=TYPES.models)
    assert accepted == []
    assert [e.reason for e in errors] == ["validation"]


def test_check_outcomes_reports_an_outcome_for_another_type_per_item() -> None:
    """Outcomes are decoded by the same rules: a valid one passes, one naming another
    event type is refused with its index."""
    outcome: dict[str, Any] = {
        "event_id": "txn-1",
        "event_type": "transaction",
        "partition_key": "acct-1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "labels": {"fraud": True},
    }
    other = {**outcome, "event_id": "ord-1", "event_type": "order"}
    encode: Callable[[dict[str, Any]], bytes] = lambda d: json.dumps(d).encode()  # noqa: E731
    accepted, errors = intake.check_outcomes(
        "transaction", [encode(outcome), encode(other)], max_bytes=MAX_BYTES
    )
    assert [a.item.event_id for a in accepted] == ["txn-1"]
    assert [(e.index, e.event_id) for e in errors] == [(1, "ord-1")]
