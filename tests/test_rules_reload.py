"""Hot reload under a running `arbiter run`: an edited rule file decides the next events,
a broken edit is refused while the rules in service keep serving, and no event is lost
or decided twice across the swaps."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from app.simulator.generate import SimEvent, generate
from app.store import migrate
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, produce, read_topics

pytestmark = [pytest.mark.kafka, pytest.mark.sqlite, pytest.mark.slow]

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"

HOLD_EVERYTHING = """
  - name: hold_everything_for_the_audit
    priority: 1000
    when: {field: amount, gte: 0}
    decision: hold_for_audit
    reason: Every payment is held during the audit.
"""


def _transactions(n: int, seed: int) -> list[SimEvent]:
    return [e for e in generate(n, seed=seed, malformed_rate=0.0) if e.event_type == "transaction"]


async def _decisions(broker: EmbeddedBroker, total: int) -> list[dict[str, object]]:
    got = await read_topics(broker.bootstrap, ["decisions.transaction"], until=total)
    return [json.loads(r.value) for r in got["decisions.transaction"]]


async def test_an_edited_rule_file_decides_the_next_events_and_a_broken_edit_is_refused(
    broker: EmbeddedBroker, trained_models: Path, tmp_path: Path
) -> None:
    """v1 decides the first events; after an edit v2 (a new top-priority rule) decides the
    next; a broken edit is refused with the reason logged and v2 keeps deciding."""
    rules = tmp_path / "rules"
    shutil.copytree(REPO_RULES, rules)
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await migrate.upgrade(db_url)
    proc = ArbiterProcess(
        tmp_path / "arbiter.log",
        {
            "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ARBITER_DATABASE_URL": db_url,
            "ARBITER_DATA_DIR": str(tmp_path / "data"),
            "ARBITER_MODELS_DIR": str(trained_models),
            "ARBITER_RULES_DIR": str(rules),
            "ARBITER_RULES_RELOAD_S": "0.3",
            "ARBITER_BATCH_WAIT_MS": "20",
        },
    )
    try:
        await proc.start().wait_for_log("consuming")
        first = _transactions(200, seed=31)
        await produce(broker.bootstrap, first)
        v1 = await _decisions(broker, len(first))
        assert len(v1) == len(first)
        assert not any(d["decision"] == "hold_for_audit" for d in v1)
        v1_versions = {d["ruleset_version"] for d in v1}
        assert len(v1_versions) == 1
        assert "" not in v1_versions

        source = rules / "transaction.yaml"
        text = source.read_text()
        source.write_text(text.replace("\nrules:\n", "\nrules:\n" + HOLD_EVERYTHING, 1))
        await proc.wait_for_log("rules reloaded")
        second = _transactions(200, seed=32)
        await produce(broker.bootstrap, second)
        both = await _decisions(broker, len(first) + len(second))
        v2 = [d for d in both if d["event_id"] in {e.event_id for e in second}]
        assert len(v2) == len(second)
        assert {d["decision"] for d in v2} == {"hold_for_audit"}
        assert {d["rules_fired"][0] for d in v2} == {"hold_everything_for_the_audit"}
        (v2_version,) = {d["ruleset_version"] for d in v2}
        assert v2_version not in v1_versions

        source.write_text(
            source.read_text().replace("field: amount, gte: 0", "field: amout, gte: 0")
        )
        await proc.wait_for_log("rules change refused; the rules in service keep serving")
        refused = next(
            e for e in proc.log_lines() if e.get("event", "").startswith("rules change refused")
        )
        assert any("amout" in p and "transaction.yaml" in p for p in refused["problems"])
        third = _transactions(200, seed=33)
        await produce(broker.bootstrap, third)
        every = await _decisions(broker, len(first) + len(second) + len(third))
        v3 = [d for d in every if d["event_id"] in {e.event_id for e in third}]
        assert {d["decision"] for d in v3} == {"hold_for_audit"}
        assert {d["ruleset_version"] for d in v3} == {v2_version}

        ids = Counter(d["event_id"] for d in every)
        assert set(ids) == {e.event_id for e in [*first, *second, *third]}
        assert max(ids.values()) == 1
        assert proc.terminate() == 0
    finally:
        proc.ensure_stopped()
