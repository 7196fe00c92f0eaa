"""Check the ``actions:`` of a rule or table row: publish, webhook, set and tag.

``ActionChecks`` adds action checking to the condition checker;
``app.rules.language.rule_checks`` builds on it. Each problem names the file, line, rule
and the fix.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from app.declarations.yamlsrc import LineMap, describe, did_you_mean, key_line, line_of
from app.rules.language.conditions import CondContext, ConditionChecks, Invalid
from app.rules.language.spec import Action, Publish, Scalar, SetValues, Tag, Webhook

__all__ = ["ACTION_KEYS", "ActionChecks"]

ACTION_KEYS = ("publish", "webhook", "set", "tag")

# Kafka's own limits: 1-249 of these characters, and not '.' or '..'.
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_WEBHOOK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_SET_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ActionChecks(ConditionChecks):
    """Turns a rule's ``actions:`` list into ``Action`` values, recording problems."""

    def actions(self, ctx: CondContext, raw: LineMap) -> tuple[Action, ...]:
        items = raw["actions"]
        line = key_line(raw, "actions")
        if not isinstance(items, list) or not items:
            self.problem(
                ctx.file,
                line,
                ctx.rule,
                "'actions' needs a list, e.g. 'actions: [{publish: fraud-alerts}, "
                f"{{tag: [fraud]}}]', not {describe(items)}",
            )
            return ()
        out: list[Action] = []
        for item in items:
            try:
                out.append(self.action(ctx, item, line_of(item, line)))
            except Invalid:
                continue
        return tuple(out)

    def action(self, ctx: CondContext, item: Any, line: int) -> Action:
        file, rule = ctx.file, ctx.rule
        if not isinstance(item, LineMap) or len(item) != 1:
            self.fail(
                file,
                line,
                rule,
                f"each action is one of {', '.join(f'{k}: ...' for k in ACTION_KEYS)} on its "
                f"own '- ' line, not {describe(item)}",
            )
        ((key, value),) = item.items()
        if key not in ACTION_KEYS:
            hint = did_you_mean(str(key), ACTION_KEYS)
            self.fail(
                file,
                line,
                rule,
                f"unknown action '{key}'{hint} (actions: {', '.join(ACTION_KEYS)}"
                "; the decision goes in 'decision:')",
            )
        if key == "publish":
            if not isinstance(value, str) or not _TOPIC_RE.match(value) or value in (".", ".."):
                self.fail(
                    file,
                    line,
                    rule,
                    f"'publish' needs a Kafka topic name (letters, digits, '.', '_', '-', at "
                    f"most 249), not {describe(value)} — e.g. 'publish: fraud-alerts'",
                )
            return Publish(value)
        if key == "webhook":
            if not isinstance(value, str) or not _WEBHOOK_RE.match(value):
                self.fail(
                    file,
                    line,
                    rule,
                    f"'webhook' needs a connector name (lowercase letter first, then "
                    f"a-z, 0-9, '_', '-'; at most 63), not {describe(value)}",
                )
            return Webhook(value)
        if key == "set":
            return SetValues(self.set_values(ctx, value, line))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.fail(file, line, rule, f"'tag' needs a list of words, not {describe(value)}")
        for tag in value:
            if not isinstance(tag, str) or not tag.strip() or len(tag) > 100:
                self.fail(
                    file, line, rule, f"a tag must be text (at most 100), not {describe(tag)}"
                )
        return Tag(tuple(value))

    def set_values(self, ctx: CondContext, value: Any, line: int) -> tuple[tuple[str, Scalar], ...]:
        if not isinstance(value, LineMap) or not value:
            self.fail(
                ctx.file,
                line,
                ctx.rule,
                f"'set' needs a mapping of fields, e.g. 'set: {{queue: fraud, priority: high}}',"
                f" not {describe(value)}",
            )
        pairs: list[tuple[str, Scalar]] = []
        for key, item in value.items():
            if not isinstance(key, str) or not _SET_KEY_RE.match(key):
                self.fail(
                    ctx.file,
                    key_line(value, key),
                    ctx.rule,
                    f"'set' field {describe(key)} must be a name (letters, digits, '_')",
                )
            if not isinstance(item, str | int | float) or item is None:
                self.fail(
                    ctx.file,
                    key_line(value, key),
                    ctx.rule,
                    f"'set' value of '{key}' must be text, a number or true/false, "
                    f"not {describe(item)}",
                )
            pairs.append((key, item))
        return tuple(pairs)
