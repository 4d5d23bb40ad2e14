"""fedstrata.monitoring."""
