"""Rules: analyst-written YAML → checked ``RuleSet`` values → decisions via durable_rules.

``loader`` reads and checks rule files (with ``conditions``, ``yamlsrc``, ``shadow``),
``spec`` holds the typed rule language, ``expr`` and ``reasons`` parse arithmetic and
reason templates, ``compile`` maps it onto durable_rules (pure), ``engine`` runs it on
batches of facts.
"""

from app.rules.engine import RuleResult, RulesEngine, RulesEngineError, registered_count
from app.rules.loader import check_rules, load_rulesets
from app.rules.spec import (
    Action,
    Publish,
    Rule,
    RuleProblem,
    RuleSet,
    SetValues,
    SourceRef,
    Tag,
    Webhook,
)

__all__ = [
    "Action",
    "Publish",
    "Rule",
    "RuleProblem",
    "RuleResult",
    "RuleSet",
    "RulesEngine",
    "RulesEngineError",
    "SetValues",
    "SourceRef",
    "Tag",
    "Webhook",
    "check_rules",
    "load_rulesets",
    "registered_count",
]
