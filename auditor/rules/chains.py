"""Rules of the chains family (see base.py for the rule unit)."""
