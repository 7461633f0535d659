"""Rules of the permanence family (see base.py for the rule unit)."""
