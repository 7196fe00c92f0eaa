"""Alembic migrations of the Arbiter store; packaged so an installed Arbiter can migrate."""
