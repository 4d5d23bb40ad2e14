"""fedstrata.torch_adapter."""
