"""Running checked rulesets on batches of facts with durable_rules: compile them
(``compile``, ``facts``), register them on the one shared host (``host``), evaluate
(``engine``) and merge what fired (``result``)."""
