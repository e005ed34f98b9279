"""synthetic_echo dataset."""
