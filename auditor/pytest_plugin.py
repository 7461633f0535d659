"""pytest plugin: `pytest --redirect-audit` (placeholder until its issue lands)."""
