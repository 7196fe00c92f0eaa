"""The hot path's I/O shell around the pure core (``app.core``): the batch processor
(ledger lookups, one transaction per batch, publishing), the correlation windows' life
cycle (rebuilt from the ledger), the upkeep between batches (rules hot reload, model
swaps) and the sweeper that publishes decisions a crash left unpublished."""
