"""docs/rules.md stays true: every YAML example in it passes `arbiter rules check` (a
fragment is placed into the smallest ruleset that can hold it)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from app.rules.loader import check_rules
from app.simulator.shapes import field_types
from tests.shipped import SCORE_TYPES

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


def _indent(text: str, spaces: int) -> str:
    return textwrap.indent(text, " " * spaces)


def _as_ruleset(block: str) -> tuple[str, str]:
    """(event type, a whole rule file) holding the example ``block``."""
    head = block.split(":", 1)[0].strip()
    if head == "ruleset":
        return block.split()[1], block
    event_type = "order" if head == "tables" else "transaction"
    top = f"ruleset: {event_type}\ndefault: {{decision: approve, reason: Default.}}\n"
    if head in ("windows", "tables", "tests"):
        extra = ""
        if "windows." in block and head != "windows":
            extra = "windows:\n  - {name: countries_over_500_10m, within: 10m, count: true}\n"
        rules = "" if head == "tests" or re.search(r"^rules:", block, re.M) else "\nrules: []\n"
        return event_type, top + extra + block + rules
    # A fragment of one rule (`when:`, `actions:`): put it in a rule.
    rule = "rules:\n  - name: example\n    decision: review\n"
    if head != "when":
        rule += "    when: {field: amount, gt: 0}\n"
    return event_type, top + rule + _indent(block, 4)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.split(":", 1)[0] for b in BLOCKS])
def test_each_yaml_example_in_the_rules_reference_passes_the_check(
    block: str, tmp_path: Path
) -> None:
    """The example, in a rule file of its own, has no problems."""
    event_type, text = _as_ruleset(block)
    (tmp_path / f"{event_type}.yaml").write_text(text)
    fields = {t: field_types(t) for t in ("order", "ticket", "transaction")}
    rulesets, problems = check_rules(tmp_path, fields, SCORE_TYPES)
    real = [p for p in problems if "no rule file" not in p.message]
    assert not real, "\n".join(str(p) for p in real) + "\n---\n" + text
    assert event_type in rulesets


def test_the_reference_has_examples() -> None:
    """The parametrised check above is not vacuous."""
    assert len(BLOCKS) >= 6
