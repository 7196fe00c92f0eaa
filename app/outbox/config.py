"""The webhook endpoints of ``connectors/connectors.yaml``, checked when they are loaded.

Each named endpoint has a URL, a signing secret (always a ``${ENV_VAR}`` reference: a
secret never lives in the repository), extra headers, a timeout, the number of attempts
before a delivery is dead-lettered, whether per-key order is kept, and what it receives:
decisions matching ``on:`` and/or decisions whose rules name it (``webhook: <name>``).
An endpoint with ``enabled_if_env: VAR`` is only active when ``VAR`` is set, so the
shipped file can carry an example without any environment.

Every problem is a ``ConfigError`` naming the file, line, endpoint, field and the fix.
Pure apart from reading the one file; the environment is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from app.declarations.yamlsrc import LineLoader, LineMap
from app.errors import ConfigError
from app.rules.language.spec import RuleSet, Webhook

__all__ = [
    "Endpoint",
    "Endpoints",
    "check_rule_webhooks",
    "load_endpoints",
    "parse_endpoints",
]

# Same as the rule checker's ``webhook:`` names (app.rules.language.actions).
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Headers the protocol sets; an endpoint may not configure them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "idempotency-key",
        "x-arbiter-signature",
        "x-arbiter-timestamp",
        "x-arbiter-attempt",
    }
)

_FIX = {
    "url": "set 'url: https://host/path' (an ${ENV_VAR} reference is fine)",
    "secret": "set 'secret: ${SOME_ENV_VAR}' and export that variable",
    "headers": "write 'headers: {X-Name: value}' with text values",
    "timeout_s": "a number of seconds above 0 and at most 120, e.g. 'timeout_s: 10'",
    "max_attempts": "a whole number from 1 to 100, e.g. 'max_attempts: 10'",
    "ordered": "true or false",
    "on": "write 'on: {decisions: [review, decline], types: [transaction]}'",
    "enabled_if_env": "the name of an environment variable, e.g. 'enabled_if_env: CASE_URL'",
}


class _Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decisions: tuple[Annotated[str, StringConstraints(min_length=1)], ...] | None = None
    types: tuple[Annotated[str, StringConstraints(min_length=1)], ...] | None = None


class _EndpointSpec(BaseModel):
    """One endpoint as written in the file (``${VAR}`` references not yet resolved)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: Annotated[str, StringConstraints(min_length=1)]
    secret: Annotated[str, StringConstraints(min_length=1)]
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=10, ge=1, le=100)
    ordered: bool = False
    on: _Subscription | None = None
    enabled_if_env: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """An active endpoint with its references resolved (the secret is kept out of repr)."""

    name: str
    url: str
    secret: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 10.0
    max_attempts: int = 10
    ordered: bool = False
    # None: every value; only consulted when ``subscribed``.
    decisions: frozenset[str] | None = None
    types: frozenset[str] | None = None
    subscribed: bool = False

    def receives(self, decision: str, event_type: str) -> bool:
        """True when its ``on:`` filter takes this decision (rule actions aside)."""
        if not self.subscribed:
            return False
        if self.decisions is not None and decision not in self.decisions:
            return False
        return self.types is None or event_type in self.types


@dataclass(frozen=True)
class Endpoints:
    """The active endpoints by name, the names declared but inactive, and the file."""

    active: Mapping[str, Endpoint] = field(default_factory=dict)
    inactive: frozenset[str] = frozenset()
    source: str = "<none>"

    @property
    def ordered(self) -> frozenset[str]:
        return frozenset(name for name, e in self.active.items() if e.ordered)

    @property
    def declared(self) -> frozenset[str]:
        return frozenset(self.active) | self.inactive


def load_endpoints(path: Path, environ: Mapping[str, str]) -> Endpoints:
    """The endpoints of the file at ``path``; ``ConfigError`` if it is missing or wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the connectors file {path} ({exc.strerror or exc}): create it, or "
            "set ARBITER_CONNECTORS_FILE to an existing file (connectors/connectors.yaml)"
        ) from exc
    return parse_endpoints(text, str(path), environ)


def parse_endpoints(text: str, file: str, environ: Mapping[str, str]) -> Endpoints:
    """The endpoints of a connectors file's ``text`` (``file`` names it in errors)."""
    try:
        raw = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc}); fix the syntax") from exc
    if raw is None:
        return Endpoints(source=file)
    if not isinstance(raw, dict) or set(raw) - {"webhooks"}:
        extra = sorted(str(k) for k in raw) if isinstance(raw, dict) else []
        raise ConfigError(
            f"{file}: the top level must be one 'webhooks:' mapping of endpoint names"
            + (f" (found {', '.join(extra)})" if extra else "")
            + "; see docs/webhooks.md"
        )
    hooks = raw.get("webhooks") or {}
    if not isinstance(hooks, dict):
        raise ConfigError(f"{file}: 'webhooks' must map endpoint names to their settings")
    if isinstance(hooks, LineMap) and hooks.duplicate_keys:
        name, line = hooks.duplicate_keys[0]
        raise ConfigError(f"{file}:{line}: webhook '{name}' is defined twice; keep one")
    active: dict[str, Endpoint] = {}
    inactive: set[str] = set()
    for name, body in hooks.items():
        at = hooks.key_lines.get(name) if isinstance(hooks, LineMap) else None
        where = f"{file}:{at}" if at else file
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(
                f"{where}: webhook name {name!r} is not a connector name: lowercase letter "
                "first, then a-z, 0-9, '_', '-' (at most 63), as rules write 'webhook: <name>'"
            )
        endpoint = _endpoint(name, body, where, environ)
        if endpoint is None:
            inactive.add(name)
        else:
            active[name] = endpoint
    return Endpoints(active=active, inactive=frozenset(inactive), source=file)


def _endpoint(name: str, body: Any, where: str, environ: Mapping[str, str]) -> Endpoint | None:
    if not isinstance(body, dict):
        raise ConfigError(
            f"{where}: webhook '{name}' needs a mapping of settings (url, secret, ...), "
            f"not {type(body).__name__}"
        )
    # YAML 1.1 reads a bare ``on`` key as the boolean true.
    data = {("on" if key is True else key): value for key, value in body.items()}
    try:
        spec = _EndpointSpec.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, name, where) from None
    if spec.enabled_if_env is not None and not environ.get(spec.enabled_if_env):
        return None
    url = _resolve(spec.url, name, "url", where, environ)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{where}: webhook '{name}' field 'url' is {url!r}, not an http(s) URL: {_FIX['url']}"
        )
    if not _REF_RE.fullmatch(spec.secret.strip()):
        raise ConfigError(
            f"{where}: webhook '{name}' field 'secret' must be an environment reference such "
            "as '${CASE_MANAGEMENT_SECRET}', never the secret itself: move the value into an "
            "environment variable"
        )
    secret = _resolve(spec.secret.strip(), name, "secret", where, environ)
    headers: list[tuple[str, str]] = []
    for key, value in spec.headers.items():
        if not _HEADER_NAME_RE.match(key) or key.lower() in RESERVED_HEADERS:
            raise ConfigError(
                f"{where}: webhook '{name}' field 'headers' cannot set {key!r}: "
                + (
                    "Arbiter sets it itself; remove it"
                    if key.lower() in RESERVED_HEADERS
                    else "not a valid header name"
                )
            )
        headers.append((key, _resolve(value, name, f"headers.{key}", where, environ)))
    on = spec.on
    return Endpoint(
        name=name,
        url=url,
        secret=secret,
        headers=tuple(headers),
        timeout_s=spec.timeout_s,
        max_attempts=spec.max_attempts,
        ordered=spec.ordered,
        decisions=frozenset(on.decisions) if on and on.decisions is not None else None,
        types=frozenset(on.types) if on and on.types is not None else None,
        subscribed=on is not None,
    )


def _resolve(value: str, name: str, field_name: str, where: str, environ: Mapping[str, str]) -> str:
    """``value`` with every ``${VAR}`` replaced from ``environ``; a missing one is an error."""

    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        found = environ.get(var)
        if found is None or found == "":
            raise ConfigError(
                f"{where}: webhook '{name}' field '{field_name}' needs the environment "
                f"variable {var}, which is not set: export {var}=... (or set 'enabled_if_env' "
                "so the endpoint stays off without it)"
            )
        return found

    return _REF_RE.sub(sub, value)


def _config_error(exc: ValidationError, name: str, where: str) -> ConfigError:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            fix = f"remove it or fix the spelling (fields: {', '.join(_FIX)})"
            if top == "on":
                fix = "'on' takes 'decisions' and 'types'"
            problems.append(f"field '{loc}' is not known: {fix}")
        else:
            problems.append(
                f"field '{loc}': {error['msg']}; {_FIX.get(top, 'see docs/webhooks.md')}"
            )
    return ConfigError(f"{where}: webhook '{name}' " + "; ".join(problems))


def check_rule_webhooks(rulesets: Mapping[str, RuleSet], endpoints: Endpoints) -> list[str]:
    """Refuse rules naming a connector the connectors file does not declare (ConfigError with
    the rule's file and line); return the declared-but-inactive names rules use (their
    ``webhook:`` actions send nothing until the endpoint is enabled — worth a warning)."""
    unknown: list[str] = []
    idle: set[str] = set()
    for ruleset in rulesets.values():
        for rule in ruleset.rules:
            for action in rule.actions:
                if not isinstance(action, Webhook):
                    continue
                if action.name in endpoints.active:
                    continue
                if action.name in endpoints.inactive:
                    idle.add(action.name)
                    continue
                at = rule.source.file + (f":{rule.source.line}" if rule.source.line else "")
                unknown.append(f"{at} rule '{rule.name}': webhook '{action.name}'")
    if unknown:
        known = ", ".join(sorted(endpoints.declared)) or "none"
        raise ConfigError(
            f"rules name webhook connectors that {endpoints.source} does not declare "
            f"(declared: {known}); add them there or fix the rule:\n" + "\n".join(unknown)
        )
    return sorted(idle)
