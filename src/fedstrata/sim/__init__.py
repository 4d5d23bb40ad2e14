"""fedstrata.sim."""
