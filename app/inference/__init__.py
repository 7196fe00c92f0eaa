"""Serving models: features from events (pure), versioned model artifacts, loading and
batch scoring. Imports nothing of the store, the trainer or the simulator: fitting lives
in ``app.trainer.jobs``, the registry's side of loading in ``app.pipeline.models``."""
