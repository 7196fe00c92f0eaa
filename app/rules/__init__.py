"""Rules: analyst-written YAML → checked ``RuleSet`` values → decisions via durable_rules.

Four rooms and two modules, lowest first (each imports only the ones before it):

- ``language/``: what a rule file means once checked (``spec``), its small languages
  (arithmetic ``expr``, reason templates ``reasons``, value ``kinds``), the line-aware
  YAML reader (``yamlsrc``) and the checks that turn YAML into spec values or problems
  (``conditions``, ``actions``, ``rule_checks``, ``tables``, ``merge``, ``shadow``).
- ``windows/``: correlation windows, declared in rule files, kept by Arbiter and read by
  rules as ``windows.<name>`` (what they are, their ``where`` filter, their state, how
  a ``windows:`` list is read).
- ``loader``: reads a rules folder: checks each file and its windows, merges each event
  type's files into one ``RuleSet`` (``check_rules``/``load_rulesets``); ``reload``
  watches the folder for the running service.
- ``runtime/``: runs checked rulesets on batches of facts with durable_rules
  (``compile``, ``facts``, ``host``, ``engine``, ``result``).
- ``authoring/``: the rule author's tools: ``arbiter rules test`` and the pure replay
  and comparison behind ``arbiter rules backtest`` (its ledger reading is in
  ``app.ops.backtest``).

Pure: nothing here does network or database I/O; only ``runtime`` imports durable_rules.
"""
