"""fedstrata.privacy."""
