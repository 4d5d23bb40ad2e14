"""fedstrata.aggregation."""
