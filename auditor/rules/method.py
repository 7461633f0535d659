"""Rules of the method family (see base.py for the rule unit)."""
