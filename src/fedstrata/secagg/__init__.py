"""fedstrata.secagg."""
