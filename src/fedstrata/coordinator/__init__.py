"""fedstrata.coordinator."""
