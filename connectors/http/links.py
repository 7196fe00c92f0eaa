"""Signed, expiring links to training reports (pure: no I/O, the clock is passed in).

The dashboard opens a report in a new tab, and a new tab cannot send the page's
``Authorization`` header. So ``/dashboard/data`` hands each report out as
``/reports/<folder>/report.html?sig=<key prefix>.<expires unix>.<hmac>``, where the HMAC
(SHA-256) is keyed with the stored hash of the caller's API key and covers the report's
*folder* and the expiry. Keyed by the stored hash, a link checks on every replica that
shares the database and dies with its key; covering the folder, one signature also opens
the chart files the page links to by relative URL (``dashboard.py`` passes it on to them
in a cookie scoped to that folder).

Paths here are relative to the reports folder, decoded (``transaction.fraud/run-3/report.html``)
and already ``clean``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

TTL_S = 15 * 60  # how long a link handed to the page stays valid
PARAM = "sig"  # the query parameter carrying the signature
_TOKEN_RE = re.compile(r"([a-z0-9]{8})\.([0-9]{1,12})\.([0-9a-f]{64})")  # used with fullmatch
_DOMAIN = b"arbiter-report-link/v1"  # a MAC made for anything else never verifies here


@dataclass(frozen=True)
class Signature:
    """A parsed ``sig`` value: which key signed, until when, and the MAC."""

    prefix: str
    expires: int  # unix seconds
    mac: str


def clean(path: str) -> str | None:
    """``path`` if it names something inside the reports folder by its own parts, else None:
    no empty, ``.`` or ``..`` part, not absolute, no backslash or NUL."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return path


def folder(path: str) -> str:
    """The folder a signature covers: ``m/run-3/report.html`` → ``m/run-3/`` (``""`` for a
    file at the top of the reports folder)."""
    parent = PurePosixPath(path).parent.as_posix()
    return "" if parent == "." else parent + "/"


def _mac(scope: str, expires: int, secret: str) -> str:
    message = b"\n".join((_DOMAIN, scope.encode(), str(expires).encode()))
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(path: str, prefix: str, secret: str, expires: int) -> str:
    """The ``sig`` value opening ``path``'s folder until ``expires`` (unix seconds), for the
    key ``prefix`` whose stored hash is ``secret``."""
    return f"{prefix}.{expires}.{_mac(folder(path), expires, secret)}"


def parse(token: str) -> Signature | None:
    """The parts of a well-formed ``sig`` value, or None for anything else."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return Signature(match.group(1), int(match.group(2)), match.group(3))


def verify(signature: Signature, path: str, secret: str, now: float) -> bool:
    """Whether ``signature`` opens ``path`` at ``now``: made with ``secret`` for the folder
    ``path`` is in, and not yet expired."""
    if now >= signature.expires:
        return False
    expected = _mac(folder(path), signature.expires, secret)
    return hmac.compare_digest(expected, signature.mac)


def seconds_left(signature: Signature, now: float) -> int:
    return max(0, int(signature.expires - now))
