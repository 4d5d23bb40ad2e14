"""Heterogeneity-aware scheduling: device registry, predictor, allocation, selection."""
