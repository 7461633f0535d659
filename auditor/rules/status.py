"""Rules of the status family (see base.py for the rule unit)."""
