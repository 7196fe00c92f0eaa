"""Scoring: features from events (pure), versioned model artifacts, batch scoring."""
