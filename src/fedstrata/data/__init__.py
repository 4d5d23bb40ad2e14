"""fedstrata.data."""
