"""Rules of the location family (see base.py for the rule unit)."""
