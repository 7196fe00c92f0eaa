"""The webhook protocol and configuration as pure logic: signatures, the retry schedule,
Retry-After, the endpoints file and the delivery planner. No network, no database."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.outbox.config import (
    Endpoint,
    Endpoints,
    check_rule_webhooks,
    load_endpoints,
    parse_endpoints,
)
from app.outbox.plan import plan_batch, plan_deliveries
from app.rules.language.spec import AllOf, Rule, RuleSet, SourceRef, Webhook
from app.settings import Settings
from connectors.webhooks.client import (
    MAX_RETRY_AFTER_S,
    backoff_delay,
    classify,
    parse_retry_after,
    request_headers,
    signature,
    verify,
)
from schemas import Decision

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ENV = {"CASE_URL": "https://cases.example/hook", "CASE_SECRET": "s3cret-value"}


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """The signature header is v1= + hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
    body = b'{"event_id":"e1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", 1700000000, body) == f"v1={expected}"


def test_verify_accepts_a_fresh_signature_and_refuses_tampering_and_old_timestamps() -> None:
    """verify holds for the signed body only, within the tolerance, with any listed signature."""
    body = b'{"a":1}'
    sig = signature("k", 1000, body)
    assert verify("k", "1000", body, sig, now=1100)
    assert verify("k", "1000", body, f"v1=deadbeef, {sig}", now=1000)  # rotation
    assert not verify("k", "1000", b'{"a":2}', sig, now=1000)
    assert not verify("other", "1000", body, sig, now=1000)
    assert not verify("k", "1000", body, sig, now=1000 + 301)
    assert not verify("k", "soon", body, sig, now=1000)


def test_request_headers_carry_the_protocol_and_endpoint_headers_cannot_override_it() -> None:
    """Content type, timestamp, signature, idempotency key and attempt win over extras."""
    headers = request_headers(
        secret="k",
        timestamp=5,
        body=b"{}",
        idempotency_key="e1:hook",
        attempt=2,
        extra={"X-Team": "fraud", "Content-Type": "text/plain"},
    )
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Team"] == "fraud"
    assert headers["Idempotency-Key"] == "e1:hook"
    assert headers["X-Arbiter-Attempt"] == "2"
    assert headers["X-Arbiter-Signature"] == signature("k", 5, b"{}")


def test_backoff_doubles_from_the_base_up_to_the_cap_scaled_by_the_jitter() -> None:
    """Full jitter: rand() * min(cap, base * 2**(attempt-1))."""
    top = [backoff_delay(n, base_s=1, cap_s=300, rand=lambda: 1.0) for n in range(1, 12)]
    assert top == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_delay(3, base_s=1, cap_s=300, rand=lambda: 0.25) == 1.0
    assert backoff_delay(500, base_s=1, cap_s=300, rand=lambda: 0.5) == 150.0
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(0, base_s=1, cap_s=300, rand=lambda: 0.5)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (500, "retry"),
        (503, "retry"),
        (408, "retry"),
        (429, "retry"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (410, "failed"),
        (301, "failed"),
    ],
)
def test_classify_retries_5xx_408_429_only(status: int, verdict: str) -> None:
    """2xx delivered; 5xx, 408, 429 retried; every other answer fails at once."""
    assert classify(status) == verdict


def test_retry_after_reads_seconds_and_http_dates_and_clamps() -> None:
    """Delta-seconds and HTTP-dates both work; the past is 0; absurd waits are capped."""
    assert parse_retry_after("7", T0) == 7.0
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", T0) == 30.0
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", T0) == 0.0
    assert parse_retry_after("999999", T0) == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(None, T0) is None


# --- the endpoints file ------------------------------------------------------------

GOOD = """
webhooks:
  case_management:
    url: ${CASE_URL}
    secret: ${CASE_SECRET}
    headers: {X-Team: fraud}
    timeout_s: 3
    max_attempts: 4
    ordered: true
    on:
      decisions: [review, decline]
      types: [transaction]
  audit:
    url: http://audit.local/in
    secret: ${CASE_SECRET}
"""


def test_endpoints_file_resolves_references_and_defaults() -> None:
    """${VAR} references come from the environment; unset fields take their defaults."""
    eps = parse_endpoints(GOOD, "c.yaml", ENV)
    case = eps.active["case_management"]
    assert case.url == "https://cases.example/hook"
    assert case.secret == "s3cret-value"
    assert "s3cret" not in repr(case)
    assert (case.timeout_s, case.max_attempts, case.ordered) == (3, 4, True)
    assert case.receives("review", "transaction")
    assert not case.receives("approve", "transaction")
    assert not case.receives("review", "order")
    audit = eps.active["audit"]
    assert (audit.timeout_s, audit.max_attempts, audit.ordered, audit.subscribed) == (
        10,
        10,
        False,
        False,
    )
    assert eps.ordered == {"case_management"}


def _hook(extra: str = "", url: str = "http://x/", secret: str = "${S}", name: str = "a") -> str:
    """A one-endpoint file; ``extra`` is more YAML lines of the endpoint."""
    lines = [f"    {line}" for line in (f"url: {url}", f"secret: {secret}", *extra.split(";"))]
    return f"webhooks:\n  {name}:\n" + "\n".join(line for line in lines if line.strip()) + "\n"


S1 = {"S": "1"}


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        (
            GOOD,
            {"CASE_URL": "https://x/y"},
            ["c.yaml:", "case_management", "secret", "CASE_SECRET"],
        ),
        (_hook(secret="plain"), {}, ["'a'", "secret", "environment"]),
        (_hook(url="ftp://x/"), S1, ["'url'", "http(s)"]),
        (_hook("timeout: 3"), S1, ["'a'", "'timeout'", "not known", "timeout_s"]),
        (_hook("max_attempts: 0"), S1, ["'max_attempts'", "1 to 100"]),
        (_hook("on: {decision: [x]}"), S1, ["'on.decision'", "'decisions' and 'types'"]),
        (_hook(name="Bad"), S1, ["c.yaml:2", "'Bad'"]),
        (_hook("headers: {Idempotency-Key: x}"), S1, ["Idempotency-Key", "Arbiter sets it"]),
        ("hooks: {}\n", {}, ["top level", "webhooks"]),
        ("webhooks: [\n", {}, ["not valid YAML"]),
    ],
)
def test_a_bad_endpoints_file_is_a_config_error_naming_file_endpoint_field_and_fix(
    text: str, env: dict[str, str], words: list[str]
) -> None:
    """Each mistake is refused with a message that says where and what to do."""
    with pytest.raises(ConfigError) as caught:
        parse_endpoints(text, "c.yaml", env)
    for word in words:
        assert word in str(caught.value)


def test_an_endpoint_with_enabled_if_env_is_inactive_until_the_variable_is_set() -> None:
    """Off without its variable (its references are not even resolved), on with it."""
    text = "webhooks:\n  a:\n    enabled_if_env: A_URL\n    url: ${A_URL}\n    secret: ${A_KEY}\n"
    off = parse_endpoints(text, "c.yaml", {})
    assert (dict(off.active), off.inactive) == ({}, {"a"})
    on = parse_endpoints(text, "c.yaml", {"A_URL": "http://a/", "A_KEY": "k"})
    assert set(on.active) == {"a"}


def test_the_shipped_connectors_file_loads_with_no_environment() -> None:
    """`arbiter run` starts with the repository's file and nothing exported."""
    settings = Settings()
    eps = load_endpoints(settings.connectors_file, {})
    assert not eps.active
    assert "case_management" in eps.inactive


def test_a_missing_connectors_file_names_the_setting(tmp_path: Path) -> None:
    """Pointing ARBITER_CONNECTORS_FILE at nothing is refused with the fix."""
    with pytest.raises(ConfigError, match="ARBITER_CONNECTORS_FILE"):
        load_endpoints(tmp_path / "nope.yaml", {})


def _ruleset(*hooks: str) -> RuleSet:
    rules = tuple(
        Rule(
            name=f"r{i}",
            when=AllOf(()),
            decision="review",
            reason="x",
            source=SourceRef("rules/transaction.yaml", 10 + i),
            actions=(Webhook(h),),
        )
        for i, h in enumerate(hooks)
    )
    return RuleSet("transaction", rules, "approve", "ok", "v", ("rules/transaction.yaml",))


def test_rules_naming_an_unknown_connector_are_refused_at_start_up() -> None:
    """Unknown names are a ConfigError with the rule's file and line; inactive ones warn."""
    eps = parse_endpoints(
        GOOD + "  idle:\n    enabled_if_env: NOPE\n    url: x\n    secret: y\n", "c.yaml", ENV
    )
    assert check_rule_webhooks({"transaction": _ruleset("audit", "idle")}, eps) == ["idle"]
    with pytest.raises(ConfigError) as caught:
        check_rule_webhooks({"transaction": _ruleset("audit", "case_mgmt")}, eps)
    assert "rules/transaction.yaml:11 rule 'r1': webhook 'case_mgmt'" in str(caught.value)
    assert "c.yaml" in str(caught.value)


# --- the planner -------------------------------------------------------------------


def _decision(event_id: str, decision: str = "review", **kw: object) -> Decision:
    fields: dict[str, object] = {
        "event_id": event_id,
        "event_type": "transaction",
        "partition_key": "acct-1",
        "decision": decision,
        "occurred_at": T0,
        "decided_at": T0,
        "latency_ms": 1.0,
    }
    fields.update(kw)
    return Decision.model_validate(fields)


def test_planner_sends_to_subscribers_and_to_endpoints_rules_name_once_each() -> None:
    """on: filters and webhook actions both route; an endpoint gets one delivery per event."""
    eps = parse_endpoints(GOOD, "c.yaml", ENV)
    named = _decision(
        "e1",
        "approve",
        actions=({"type": "webhook", "name": "audit"}, {"type": "webhook", "name": "audit"}),
    )
    assert [d.endpoint for d in plan_deliveries(named, eps, T0)] == ["audit"]
    both = _decision("e2", "decline", actions=({"type": "webhook", "name": "audit"},))
    planned = plan_deliveries(both, eps, T0)
    assert [d.endpoint for d in planned] == ["audit", "case_management"]
    assert planned[0].idempotency_key == "e2:audit"
    assert planned[0].partition_key == "acct-1"
    assert planned[0].payload == both.model_dump(mode="json")
    assert plan_deliveries(_decision("e3", "approve"), eps, T0) == []
    assert plan_batch([both], None, T0) == []


def test_planner_ignores_inactive_endpoints() -> None:
    """A rule naming an endpoint that is switched off plans no delivery."""
    eps = Endpoints(active={}, inactive=frozenset({"audit"}))
    named = _decision("e1", actions=({"type": "webhook", "name": "audit"},))
    assert plan_deliveries(named, eps, T0) == []
    one = Endpoints(active={"a": Endpoint("a", "http://a/", "k", subscribed=True)})
    assert [d.endpoint for d in plan_batch([named], one, T0 + timedelta(seconds=1))] == ["a"]
