"""Rules: analyst-written YAML → checked ``RuleSet`` values → decisions via durable_rules.

``loader`` reads and checks rule files, ``spec`` holds the typed rule language,
``compile`` maps it onto durable_rules (pure), ``engine`` runs it on batches of facts.
"""

from app.rules.engine import RuleResult, RulesEngine, RulesEngineError
from app.rules.loader import RuleProblem, check_rules, load_rulesets
from app.rules.spec import Rule, RuleSet, SourceRef

__all__ = [
    "Rule",
    "RuleProblem",
    "RuleResult",
    "RuleSet",
    "RulesEngine",
    "RulesEngineError",
    "SourceRef",
    "check_rules",
    "load_rulesets",
]
