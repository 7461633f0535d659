"""The redirect-auditor command line (typer)."""
