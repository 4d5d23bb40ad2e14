"""fedstrata.compress."""
