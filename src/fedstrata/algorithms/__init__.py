"""fedstrata.algorithms."""
