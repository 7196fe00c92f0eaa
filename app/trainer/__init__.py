"""The trainer: outcomes in, better models out (issue 5)."""
