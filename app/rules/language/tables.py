"""Check decision tables: compact rows over a list of inputs, compiled to rules.

A ``tables:`` item names its ``inputs`` (field paths) and lists ``rows``; each row's
``when`` has one cell per input (a value means "equals", a mapping is an operator,
``-`` is any value) and becomes the rule ``<table>.<row number>``.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from app.declarations.yamlsrc import LineMap, describe, key_line, line_of
from app.rules.language.conditions import CondContext
from app.rules.language.rule_checks import NAME_RE, FileRules, RuleChecks
from app.rules.language.spec import AllOf, Condition, Rule, SourceRef

__all__ = ["ANY_CELL", "ROW_KEYS", "TABLE_KEYS", "TableChecks"]

TABLE_KEYS = ("name", "priority", "inputs", "rows")
ROW_KEYS = ("when", "decision", "reason", "actions")
ANY_CELL = "-"


class TableChecks(RuleChecks):
    """Turns ``tables:`` items into one ``Rule`` per row, recording problems."""

    def check_table(self, part: FileRules, raw: Any, index: int, list_line: int) -> list[Rule]:
        file = part.path
        if not isinstance(raw, LineMap):
            self.problem(
                file,
                line_of(raw, list_line),
                None,
                f"table #{index + 1} is {describe(raw)}, not a mapping — write it as "
                "'- name: ...' with 'inputs' and 'rows' below",
            )
            return []
        name = self.text(file, raw, "name", None, f"table #{index + 1}", required=True)
        if name is not None and not NAME_RE.match(name):
            self.problem(
                file,
                key_line(raw, "name"),
                name,
                "a table name may only use letters, digits, '_', '.' and '-'",
            )
            name = None
        label = name or f"table #{index + 1}"
        self.unknown_keys(file, raw, TABLE_KEYS, label, "a table")
        priority = self.priority(file, raw, label)
        inputs = raw.get("inputs")
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) and i.strip() for i in inputs)
        ):
            self.problem(
                file,
                key_line(raw, "inputs"),
                label,
                f"'inputs' needs a list of field paths, e.g. '[amount, channel]', "
                f"not {describe(inputs)}",
            )
            return []
        rows = raw.get("rows")
        if not isinstance(rows, list) or not rows:
            self.problem(
                file,
                key_line(raw, "rows"),
                label,
                f"'rows' needs a list of rows ('- when: [...]'), not {describe(rows)}",
            )
            return []
        rules = []
        for number, row in enumerate(rows, start=1):
            rule_name = f"{name or 'table'}.{number}"
            rule = self.check_row(part, row, rule_name, inputs, key_line(raw, "rows"))
            if rule is not None and name is not None and priority is not None:
                rules.append(
                    Rule(
                        rule.name,
                        rule.when,
                        rule.decision,
                        rule.reason,
                        rule.source,
                        priority,
                        rule.actions,
                    )
                )
        return rules

    def check_row(
        self, part: FileRules, row: Any, name: str, inputs: list[str], rows_line: int
    ) -> Rule | None:
        file = part.path
        line = line_of(row, rows_line)
        if not isinstance(row, LineMap):
            self.problem(
                file, line, name, f"a row must be a mapping with 'when', not {describe(row)}"
            )
            return None
        self.unknown_keys(file, row, ROW_KEYS, name, "a table row")
        ctx = CondContext(file, part.event_type, name, self.kinds.setdefault(part.event_type, {}))
        parts = self.rule_parts(ctx, row)
        cells = row.get("when")
        if not isinstance(cells, list) or len(cells) != len(inputs):
            got = f"{len(cells)} cells" if isinstance(cells, list) else describe(cells)
            self.problem(
                file,
                line,
                name,
                f"the row has {got} but the table has {len(inputs)} inputs "
                f"({', '.join(inputs)}) — write one cell per input, '-' for any value",
            )
            return None
        conditions: list[Condition] = []
        ok = True
        for path, cell in zip(inputs, cells, strict=True):
            if cell is None or cell == ANY_CELL:
                continue
            compare = LineMap({"field": path.strip()})
            compare.line = line_of(cell, line)
            compare.key_lines = {}
            compare.duplicate_keys = []
            if isinstance(cell, LineMap):
                compare.update(cell)
                compare.key_lines = dict(cell.key_lines)
                compare.duplicate_keys = list(cell.duplicate_keys)
            else:
                compare["eq"] = cell  # a bare value means "equals"
            condition = self.attempt_condition(ctx, compare, compare.line)
            if condition is None:
                ok = False
            else:
                conditions.append(condition)
        if ok and not conditions:
            self.problem(
                file,
                line,
                name,
                "every cell is '-', so the row matches everything — put that in 'default' "
                "or give the row at least one condition",
            )
            return None
        if not ok or not parts.ok:
            return None
        when = conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))
        return self.rule(name, when, parts, SourceRef(file, line), 0)
