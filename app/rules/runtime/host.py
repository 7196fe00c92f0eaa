"""The one durable_rules ``Host`` of the process and the rulesets registered in it.

``app.rules.runtime.engine`` posts every message through ``shared_host()`` while holding
``LOCK``, and registers compiled rulesets with ``acquire``/``release``. What durable
does that shapes this module is written down in ``docs/dependencies.md``, durable_rules.

- One ``Host`` for the whole process, shared by every ``RulesEngine``: a durable Host
  starts timer threads and cannot be closed. Its threads are switched off (``_run`` is a
  no-op): ``post`` already runs the action in the caller's thread, and the background
  dispatcher could otherwise take the action of a message we are posting.
- durable swallows an action's error into ``state["exception"]`` and keeps reporting it
  on every later post; our action cannot fail and clears a stale one (the engine raises
  if one shows up anyway).

Registrations and hot reload. durable refuses a ruleset name twice and cannot change a
registered ruleset; there is no practical limit on how many are registered, but each
keeps C memory until it is deleted, so reloading without deleting grows the process
without bound. Deleting the ruleset alone leaks its default session; deleting the
session first, then the ruleset, frees both. So registrations are shared by content:
the key is a hash of the compiled durable definition, so reloading unchanged rules (or
switching back to an earlier version) reuses the registration; each is
reference-counted across engines and deleted, session first, when the last engine stops
using it. Deleting only ever happens under ``LOCK``, which every post holds, never while
a post is running. Deleting the session is safe here because these rulesets have no
joins and a sweep message runs an action in the session first (``SyncHost.unregister``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import durable_rules_engine  # type: ignore[import-not-found]  # durable's C module, untyped
from durable.engine import Host

from app.errors import ConfigError


class SyncHost(Host):  # type: ignore[misc]  # durable ships no type information
    """A durable Host without background threads whose actions record the rules that fired."""

    def __init__(self) -> None:
        self.fired: list[str] = []
        super().__init__()

    def _run(self) -> None:
        # No dispatch/timer threads: actions run inside post(), in the caller's thread.
        return

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        def action(closure: Any) -> None:
            self.fired.append(action_name)
            # A stale exception would otherwise be reported by every later post.
            closure.s._d.pop("exception", None)

        return action

    def unregister(self, name: str) -> None:
        """Forget a ruleset and free its C memory: default session first, then the ruleset.

        durable's ``createStateNode`` leaves the session's action context uninitialised
        and ``deleteStateNode`` frees it: deleting a session in which no action ever ran
        frees a garbage pointer (the segfault in ``docs/dependencies.md``,
        durable_rules). Posting the sweep message first runs the sweep rule's action on
        the default session, which sets that context, so the delete is safe; it also
        creates the session if none existed.
        """
        self.post(name, {"id": next(MESSAGE_IDS), SWEEP_KEY: True})
        self.fired.clear()
        ruleset = self._ruleset_directory.pop(name)
        self._ruleset_list.remove(ruleset)
        durable_rules_engine.delete_state(ruleset._handle, None)
        durable_rules_engine.delete_ruleset(ruleset._handle)


# A rule every registration carries, fired only by ``unregister`` (no fact has the key).
SWEEP_KEY = "__arbiter_sweep"
_SWEEP_RULE: dict[str, Any] = {
    "all": [{"m": {"$eq": {SWEEP_KEY: True}}}],
    "pri": 2**31 - 1,
    "run": SWEEP_KEY,
}

_HOST: SyncHost | None = None
# Guards the shared Host and the registrations: register/delete, and every post.
LOCK = threading.Lock()
# Every message gets a process-unique id: a redelivered event is evaluated again.
MESSAGE_IDS = itertools.count(1)
_RULESET_NUMBERS = itertools.count(1)


def shared_host() -> SyncHost:
    """The process's one Host, created on first use."""
    global _HOST  # noqa: PLW0603 - one Host per process is the point
    if _HOST is None:
        _HOST = SyncHost()
    return _HOST


@dataclass
class _Registration:
    name: str
    users: int


# Compiled-definition hash -> its registration; shared by every engine in the process.
_REGISTRATIONS: dict[str, _Registration] = {}


def registered_count() -> int:
    """How many rulesets durable holds for Arbiter right now (for tests and metrics)."""
    with LOCK:
        return len(_REGISTRATIONS)


def acquire(event_type: str, body: Mapping[str, Any], context: str) -> str:
    """The durable name of a registration of ``body`` (new or shared). Lock held."""
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()
    existing = _REGISTRATIONS.get(digest)
    if existing is not None:
        existing.users += 1
        return existing.name
    name = f"{event_type}_{digest[:12]}_{next(_RULESET_NUMBERS)}"
    try:
        # set_rulesets mutates the definition it is given; hand it a private copy.
        shared_host().set_rulesets({name: copy.deepcopy({**body, SWEEP_KEY: _SWEEP_RULE})})
    except Exception as exc:
        raise ConfigError(
            f"durable_rules refused the {context}: {exc} "
            "— the rules in service are unchanged; simplify the rule it names"
        ) from exc
    _REGISTRATIONS[digest] = _Registration(name, 1)
    return name


def release(name: str) -> None:
    """Drop one user of a registration; delete it from durable with the last. Lock held."""
    for digest, registration in _REGISTRATIONS.items():
        if registration.name == name:
            registration.users -= 1
            if registration.users <= 0:
                del _REGISTRATIONS[digest]
                shared_host().unregister(name)
            return
