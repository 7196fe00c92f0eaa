"""The one error tree of Arbiter.

Every error says what went wrong *and what to do next*:

- ``InvalidEvent``  — the event is dead-lettered with the reason; the consumer keeps going.
- ``TransientError`` — retry with backoff (database blip, broker leader change).
- ``ConfigError``   — refuse to start; the message names the file/line/field and the fix.
"""

from __future__ import annotations


class ArbiterError(Exception):
    """Root of every error Arbiter raises on purpose."""


class ConfigError(ArbiterError):
    """Settings, rule files, schemas or model artifacts are unusable: refuse to start."""


class TransientError(ArbiterError):
    """A dependency is briefly unavailable: retry the same work after a backoff."""


class InvalidEvent(ArbiterError):
    """An event cannot be decided: it goes to the dead-letter topic with ``reason``.

    ``reason`` is a short stable code (``malformed_json``, ``validation``, ``oversize``,
    ``unknown_type``, ``not_an_object``) usable as a metric label; ``detail`` is the
    human sentence naming the field and the fix.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
