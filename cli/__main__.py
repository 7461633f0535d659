"""``python -m redirect_auditor_cli``: the same as the ``redirect-auditor`` command."""

from .main import main

main()
