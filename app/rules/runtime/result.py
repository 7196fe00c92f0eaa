"""What the rules said about one fact: ``RuleResult``, and how fired rules' actions merge.

``app.rules.runtime.engine`` builds these; the pipeline, the rule-file tests and the
backtest read them. Importing this module does not load durable_rules.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.rules.language.spec import Publish, Rule, SetValues, Tag, Webhook, canonical_action


@dataclass(frozen=True)
class RuleResult:
    """The outcome for one fact.

    ``decision``/``rule``/``reason``: what decided (``rule`` None = the default) and its
    interpolated reason. ``rules_fired``: every rule that fired, in priority order (one in
    stop mode). ``reasons``: their reasons, same order (the default's when none fired).
    ``actions``: ``{"type": "publish", "topic": t}``, ``{"type": "webhook", "name": n}``,
    ``{"type": "set", "values": {...}}``, ``{"type": "tag", "tags": [...]}`` in firing
    order, publish/webhook de-duplicated, all sets merged into one entry (the higher
    priority wins per key) and all tags into one. ``ruleset_version``: what decided it.
    """

    decision: str
    rule: str | None
    reason: str
    rules_fired: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    actions: tuple[Mapping[str, Any], ...] = ()
    ruleset_version: str = ""


def merge_actions(rules: Sequence[Rule]) -> tuple[Mapping[str, Any], ...]:
    """The actions of ``rules`` (in firing order) as a result carries them: publish and
    webhook once each, all ``set`` values in one entry (the first rule to set a key
    wins), all tags in one entry; each merged entry sits where its kind first appeared."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    values: dict[str, Any] | None = None
    tags: list[str] | None = None
    for rule in rules:
        for action in rule.actions:
            if isinstance(action, Publish | Webhook):
                entry = canonical_action(action)
                key = (entry["type"], action.topic if isinstance(action, Publish) else action.name)
                if key not in seen:
                    seen.add(key)
                    out.append(entry)
            elif isinstance(action, SetValues):
                if values is None:
                    values = {}
                    out.append({"type": "set", "values": values})
                for name, value in action.values:
                    values.setdefault(name, value)
            elif isinstance(action, Tag):
                if tags is None:
                    tags = []
                    out.append({"type": "tag", "tags": tags})
                tags.extend(t for t in action.tags if t not in tags)
    return tuple(out)
