"""The README's worked example stays true: its event, through the shipped rules and the
first models, gives exactly the decision the README shows."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from app.core.decode import decode_event
from app.core.stages import Valid, assemble_decisions, rule_facts
from app.inference.loading import scorer_from_folder
from app.settings import Settings
from app.values import InRecord
from app.wiring import load_rules_engine
from tests.shipped import TYPES

ROOT = Path(__file__).resolve().parent.parent


def _json_blocks(text: str) -> list[dict[str, object]]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_the_readme_event_gets_the_decision_the_readme_shows(trained_models: Path) -> None:
    """Event → scores → shipped rules → the README's decision (decision, rules, reasons,
    actions, scores, ruleset version)."""
    event_doc, shown = _json_blocks((ROOT / "README.md").read_text())[:2]
    raw = json.dumps(event_doc).encode()
    event = decode_event("transaction", raw, max_bytes=65536, models=TYPES.models)
    settings = Settings(rules_dir=ROOT / "rules")
    scorer = scorer_from_folder(trained_models)
    scored = scorer.score_batch("transaction", [event])
    scores = scored.scores
    payload = event.model_dump(mode="json")
    outcome = load_rules_engine(settings).evaluate(
        "transaction", [{**rule_facts(payload, scores[0]), "windows": {}}]
    )
    record = InRecord("transaction", "events.transaction", 0, 0, None, raw, 0)
    decided_at = event.occurred_at + timedelta(milliseconds=180)
    (decision,) = assemble_decisions(
        [Valid(record, event, payload)],
        scores,
        outcome,
        explanations=scored.explanations,
        model_versions={"transaction": scorer.versions("transaction")},
        decisions_topic={"transaction": "decisions.transaction"},
        received_at=decided_at - timedelta(milliseconds=31.7),
        decided_at=decided_at,
    )
    assert json.loads(decision.model_dump_json()) == shown


def test_the_readme_declaration_of_a_new_type_passes_the_check(tmp_path: Path) -> None:
    from app.declarations import load_declarations

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "type: loan" in b]
    (tmp_path / "loan.yaml").write_text(block, encoding="utf-8")
    declarations, problems = load_declarations(tmp_path)
    assert problems == []
    assert declarations["loan"].score_kinds() == {"default_risk": "number"}
