"""The rule author's tools: ``arbiter rules test`` (``cases``, ``case_reader``,
``testing``) and the pure replay and comparison behind ``arbiter rules backtest``
(``backtest``; its ledger reading is ``app.ops.backtest``)."""
